"""`lameduck`: try policies on manifests offline, before installing anything.

lameduck render -f policy.yaml -f deployment.yaml [--diff]
lameduck check  -f policies/ -f deployments/ [-o json]
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from lameduck_operator import __version__
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.compliance import State
from lameduck_operator.logic.decision import Decision, decide
from lameduck_operator.model import Policy, PolicyInvalid, PolicyRef, parse_policy
from lameduck_operator.names import POLICY_KINDS
from lameduck_operator.settings import DEFAULT_SIDECAR_IMAGE, Settings, SidecarSettings

EXIT_OK, EXIT_NOT_COMPLIANT, EXIT_BAD_INPUT = 0, 1, 2
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class InputError(Exception):
    """Input the CLI cannot use; printed as is, exit code 2."""


@dataclass
class Inputs:
    policies: list[Policy] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)


def _paths(arg: str) -> list[Path]:
    path = Path(arg)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES)
    if not path.exists():
        raise InputError(f"{arg}: no such file or directory")
    return [path]


def _documents(args: Sequence[str], stdin: TextIO) -> Iterator[tuple[str, dict[str, Any]]]:
    for arg in args:
        sources = [("-", stdin.read())] if arg == "-" else [(str(p), p.read_text()) for p in _paths(arg)]
        for name, text in sources:
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError as err:
                raise InputError(f"{name}: not valid YAML: {err}") from err
            for doc in docs:
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    raise InputError(f"{name}: every document must be a Kubernetes object")
                items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
                for item in items or []:
                    yield name, item


def load_inputs(args: Sequence[str], default_namespace: str, stdin: TextIO) -> Inputs:
    inputs = Inputs()
    errors: list[str] = []
    for source, obj in _documents(args, stdin):
        kind = obj.get("kind")
        meta = obj.setdefault("metadata", {})
        if kind in POLICY_KINDS:
            if kind == POLICY_KINDS[0]:
                meta.setdefault("namespace", default_namespace)
            try:
                inputs.policies.append(parse_policy(obj))
            except PolicyInvalid as err:
                label = f"{kind} {meta.get('name', '?')}"
                errors.extend(f"{source}: {label}: {e}" for e in err.errors)
        elif kind == "Deployment":
            meta.setdefault("namespace", default_namespace)
            inputs.deployments.append(obj)
        elif kind == "Namespace":
            inputs.namespace_labels[meta.get("name", "")] = dict(meta.get("labels") or {})
    if errors:
        raise InputError("invalid policies:\n  " + "\n  ".join(errors))
    return inputs


def no_rollouts(_: PolicyRef) -> int:
    """Offline, no rollout is in progress."""
    return 0


def decide_offline(deployment: Mapping[str, Any], inputs: Inputs, settings: Settings) -> Decision:
    """The operator's decision for a manifest, as the reconciler would take it."""
    labels = inputs.namespace_labels.get(deployment["metadata"]["namespace"])
    return decide(deployment, inputs.policies, settings, labels, no_rollouts)


def _decide_all(inputs: Inputs, settings: Settings) -> list[tuple[dict[str, Any], Decision]]:
    return [(d, decide_offline(d, inputs, settings)) for d in inputs.deployments]


def rendered(deployment: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The Deployment as lameduck's admission webhook would make it at its next rollout;
    unchanged when nothing may be applied.

    lameduck's fields are recorded in the lameduck.dev/admitted annotation, as the webhook
    records them, so `check` of the output tells them from the manifest's own.
    """
    if decision.intent is None or decision.verdict.state is State.CONFLICT:
        return dict(deployment)
    return injected(deployment, decision.intent)


def _summary(decision: Decision) -> list[str]:
    v = decision.verdict
    lines = [f"{v.deployment}: {v.state} ({v.reason})" + (f" under {v.policy}" if v.policy else "")]
    if decision.plan is not None:
        plan = decision.plan
        lines.append(f"  budget {plan.budget_seconds}s, hold on: {', '.join(plan.app_containers) or '-'}")
        lines.extend(f"  takes over: {t}" for t in plan.taken_over)
    if v.message:
        lines.append(f"  {v.message}")
    lines.extend(f"  {loss}" for loss in decision.losses)
    return lines


def _dump(obj: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(obj), sort_keys=False, width=120)


def cmd_render(inputs: Inputs, settings: Settings, diff: bool, out: TextIO) -> int:
    for deployment, decision in _decide_all(inputs, settings):
        after = rendered(deployment, decision)
        out.write("".join(f"# {line}\n" for line in _summary(decision)))
        if diff:
            name = str(decision.verdict.deployment)
            out.writelines(
                difflib.unified_diff(
                    _dump(deployment).splitlines(keepends=True),
                    _dump(after).splitlines(keepends=True),
                    fromfile=f"{name} (given)",
                    tofile=f"{name} (with lameduck)",
                )
            )
            out.write("\n")
        else:
            out.write("---\n" + _dump(after))
    return EXIT_OK


def cmd_check(inputs: Inputs, settings: Settings, output: str, out: TextIO) -> int:
    results = [decision for _, decision in _decide_all(inputs, settings)]
    not_compliant = [d for d in results if d.verdict.state in (State.PENDING, State.CONFLICT)]
    if output == "json":
        rows = [
            {
                "namespace": ev.verdict.deployment.namespace,
                "name": ev.verdict.deployment.name,
                "policy": str(ev.verdict.policy) if ev.verdict.policy else None,
                "state": ev.verdict.state.value,
                "reason": ev.verdict.reason.value,
                "message": ev.verdict.message,
                "budgetSeconds": ev.budget_seconds,
                "lostPolicies": [str(loss) for loss in ev.losses],
            }
            for ev in results
        ]
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        for ev in results:
            out.write("\n".join(_summary(ev)) + "\n")
        out.write(
            f"{len(results)} deployments, {len(results) - len(not_compliant)} without work, "
            f"{len(not_compliant)} pending or conflicting\n"
        )
    return EXIT_NOT_COMPLIANT if not_compliant else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lameduck", description="Try lameduck policies on manifests, offline.")
    parser.add_argument("--version", action="version", version=f"lameduck {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="policy, Deployment or Namespace manifests: a file, a directory, or - for stdin",
    )
    common.add_argument("-n", "--namespace", default="default", help="namespace of objects that name none")
    common.add_argument("--sidecar-image", default=DEFAULT_SIDECAR_IMAGE, help="the sidecar image to inject")
    common.add_argument(
        "--classic-sidecar",
        action="store_true",
        help="inject the sidecar as a regular container (clusters without native sidecars)",
    )
    render = sub.add_parser("render", parents=[common], help="print Deployments as lameduck would make them")
    render.add_argument("--diff", action="store_true", help="print a unified diff instead of the manifests")
    check = sub.add_parser(
        "check", parents=[common], help="report each Deployment's compliance; exit 1 if any is pending or conflicting"
    )
    check.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings(sidecar=SidecarSettings(image=args.sidecar_image, native=not args.classic_sidecar))
    try:
        inputs = load_inputs(args.filename, args.namespace, stdin)
    except InputError as err:
        print(f"lameduck: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "render":
        return cmd_render(inputs, settings, args.diff, out)
    return cmd_check(inputs, settings, args.output, out)


if __name__ == "__main__":
    raise SystemExit(main())
