"""How the webhook's judge and the reconcile's decide grow with a Deployment's container count.
No cluster needed.

    python -m bench.admission_scale [--containers 100 1000 4000 8000] [--repetitions 5]

For each size, one synthetic Deployment: N containers, each with three env vars and two
ports. "judge" is what the webhook does with a CREATE review of it: parse the body, then
review (decide at admission, the patch). "decide" is what the reconciler does with the same
Deployment as the API server stores it afterwards: the webhook's patch applied, managedFields
of the writer naming every field, and lameduck's admitted record. The bound on a template's
size (docs/admission.md) is lifted for "judge" and "decide", so they time the computation
itself; "served" times the review as the webhook answers it, bound in place (where the
checkout has one). Past some 1,500 containers of this shape lameduck's record of what it
added is itself over the API server's annotation limit (docs/admission.md): the review is then
admitted unchanged after judging, and "decide" judges the Deployment without lameduck's
fields, so figures there are not comparable with those of a checkout before that check.
Prints median and spread (min..max) over the repetitions (fewer for a step that takes over
--budget-seconds), and writes
bench/results/admission_scale.json. The operator measured is the one imported: with
PYTHONPATH=<another checkout>/operator, that checkout's (the result names its commit).
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.provenance import machine, operator_source, write_result
from harness.wide import NAMESPACE, deployment, stored
from lameduck_operator.logic import admission, decision
from lameduck_operator.logic.decision import Decision, Moment, decide
from lameduck_operator.model import Policy, parse_policy
from lameduck_operator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "admission_scale.json"


def policy() -> Policy:
    return parse_policy(
        {
            "apiVersion": "lameduck.dev/v1alpha1",
            "kind": "GracefulPolicy",
            "metadata": {"name": "scale", "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": {"app": "scale"}}},
        }
    )


def review_body(obj: Mapping[str, Any]) -> str:
    request = {
        "uid": "bench",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "namespace": NAMESPACE,
        "operation": "CREATE",
        "object": obj,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def _unbounded(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword that lifts the template bound, where the checkout measured has one."""
    return {"max_containers": None} if "max_containers" in inspect.signature(function).parameters else {}


def timed(action: Callable[[], Any], repetitions: int, budget: float) -> tuple[dict[str, Any], Any]:
    """Timings of up to `repetitions` runs, fewer once `budget` seconds are spent (at least one), and
    the last run's result."""
    seconds: list[float] = []
    result = None
    while len(seconds) < repetitions and (not seconds or sum(seconds) < budget):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    timing = {
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "runs_s": seconds,
    }
    return timing, result


def measure(containers: int, repetitions: int, budget: float) -> dict[str, Any]:
    policies = [policy()]
    settings = Settings()
    obj = deployment(containers)
    body = review_body(obj)

    def judge(written: Mapping[str, Any], **bound: Any) -> Decision:
        return decide(written, policies, settings, {}, lambda _: 0, moment=Moment.ADMISSION, **bound)

    unbounded = _unbounded(decide)

    def judged() -> admission.Admitted:
        return admission.review(json.loads(body), lambda w: judge(w, **unbounded), **_unbounded(admission.review))

    def served() -> admission.Admitted:
        return admission.review(json.loads(body), judge)

    judge_timing, answer = timed(judged, repetitions, budget)
    on_disk = stored(obj, list(answer.patch))

    def reconciled() -> Decision:
        return decide(on_disk, policies, settings, {}, lambda _: 0, **unbounded)

    decide_timing, reconciled_decision = timed(reconciled, repetitions, budget)
    served_timing, served_answer = timed(served, repetitions, budget)
    verdict = reconciled_decision.verdict
    return {
        "containers": containers,
        "review_bytes": len(body),
        "patch_operations": len(answer.patch),
        "reconcile_verdict": f"{verdict.state}/{verdict.reason}",
        "served_skipped": None if served_answer.skipped is None else str(served_answer.skipped),
        "judge": judge_timing,
        "decide": decide_timing,
        "served": served_timing,
    }


def _cell(timing: Mapping[str, Any]) -> str:
    return f"{timing['median_s'] * 1000:9.1f} ({timing['min_s'] * 1000:.1f}..{timing['max_s'] * 1000:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--containers", type=int, nargs="+", default=[100, 1000, 4000, 8000])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument(
        "--budget-seconds", type=float, default=60.0, help="fewer repetitions of a step once it took this long"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(f"{'containers':>10} {'review kB':>9} | {'judge ms median (min..max)':>28} | "
          f"{'decide ms median (min..max)':>28} | {'served ms median (min..max)':>28}")  # fmt: skip
    runs = []
    for n in args.containers:
        run = measure(n, args.repetitions, args.budget_seconds)
        runs.append(run)
        print(f"{n:10} {run['review_bytes'] / 1000:9.0f} | {_cell(run['judge']):>28} | "
              f"{_cell(run['decide']):>28} | {_cell(run['served']):>28}", flush=True)  # fmt: skip
    result = {
        "command": "python -m bench.admission_scale " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": operator_source()["commit"],
        "operator": operator_source(),
        "machine": machine(),
        "repetitions": args.repetitions,
        "budget_seconds": args.budget_seconds,
        "bound": getattr(decision, "MAX_TEMPLATE_CONTAINERS", getattr(decision, "MAX_CONTAINERS", None)),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
