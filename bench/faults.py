"""Faults on the local cluster: the leader SIGKILLed halfway through applying a policy, and
again every 20 s through a second change; kube-apiserver stopped for 30 s during a third; and,
when asked for, kube-apiserver stopped during sidecar holds, and Deployment writes while the
webhook has no endpoint.

    python -m bench.faults [--deployments 200] [--limit 20] [--out bench/results/faults.json]
        [--faults sigkill-leader,sigkill-leader-loop,apiserver-outage]   # the default
    python -m bench.faults --faults holds-outage [--holds-replicas 4] [--outage 30] [--outage-after 0]
        [--missing-window 150]
    python -m bench.faults --deployments 100 --faults webhook-outage [--webhook-writes 100] [--webhook-concurrency 4]

On the local cluster (hack/cluster.sh) with kwok's fake nodes (hack/kwok.sh), lameduck
installed with its chart (two replicas). N Deployments of one pod each run on the fake nodes;
an `Immediate` GracefulPolicy with `maxConcurrentRollouts` governs them. Each phase changes the
policy so that every Deployment's template must change once, injures the operator or the API
server while the change is applied, and waits until every Deployment carries it. Then, object
by object:

- exactly one new ReplicaSet per Deployment per phase (a write applied twice, or a half-applied
  template rolled out and then completed, makes two);
- every Deployment's pod template is the same (names aside) and carries the sidecar exactly
  once, with its preStop on the app container: nothing half-applied, nothing duplicated;
- a watch of its own, started before the first phase and independent of the operator, counts
  the Deployments rolling out at once: never more than the limit, across failovers;
- the operator's containers were restarted only by the faults this benchmark caused: one per
  leader kill, and in the API server outage at most one restart of the replica that led
  (a leader that cannot renew stops; see restart_problems).

The leader is SIGKILLed from the host (its container's processes, found by the container ID in
/proc/*/cgroup): no SIGTERM, no Lease released, as a crash or an OOM kill would leave it. The API
server outage is `hack/cluster.sh apiserver-outage 30`.

Two more phases run only when --faults names them, after those above, each with a record of
its own in the result file:

- holds-outage (bench/fault_holds.py): the demo app on the real node, --holds-replicas pods with
  the sidecar under a policy of their own (namespace faults-holds); every pod deleted, and the
  API server stopped for --outage seconds as soon as each shows its deletionTimestamp. Each pod
  must end within its grace period and not be SIGKILLed; its hold report, if posted, must have
  an outcome the outage allows (fallback when stage 1 was still on); every report not posted
  must be counted in the operator's lameduck_hold_reports_missing_total (summed over the
  replicas, this namespace's samples) once --missing-window seconds (default 150: the
  operator's wait for a report, and a margin) have passed since the API server came back and
  the pods were gone: posted + counted missing == pods deleted ("metric absent" if no replica
  has it). The ReplicaSet's new pods must come up with their sidecar, and the operator restart
  only as in the outage phase. Needs root (the outage; containerd's task exits by `ctr events`).
- webhook-outage (bench/fault_webhook.py): --webhook-writes (default --deployments) new kwok
  Deployments under the benchmark's policy (the last phase's; without one, a policy is applied
  and the fleet converged first) created --webhook-concurrency at a time, each timed on the
  client: once with the operator up, then with its Deployment scaled to 0 and the webhook
  Service's endpoints empty (every write must succeed, admitted unchanged); then the operator
  back to exactly its replicas, and the time until the reconciler has injected all of them.

Prints a table per phase; writes the result file even when a check fails, and exits 1 then.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from bench import fault_holds, fault_webhook
from bench.fault_holds import HoldsOutage, run_holds_outage
from bench.fault_webhook import WebhookOutage, run_webhook_outage
from bench.fleet import KWOK_TOLERATION, local_cluster_with_fake_nodes
from bench.provenance import write_result
from harness import REPO, manifests
from harness.images import PAUSE_IMAGE
from harness.install import OPERATOR_NAMESPACE, Operator, install_lameduck
from harness.kube import Kube, wait_until

NAMESPACE = "faults"
POLICY = "faults"
LABEL = {"faults": "yes"}
RESULT = REPO / "bench" / "results" / "faults.json"
SIDECAR = "lameduck"
PROPAGATION_ENV = "LAMEDUCK_PROPAGATION_DELAY"  # docs/sidecar.md's settings, as the benchmark reads them


def deployment(i: int, prefix: str = "app") -> dict[str, Any]:
    container = manifests.container("app", PAUSE_IMAGE, 8080, imagePullPolicy="Never")
    return manifests.deployment(
        f"{prefix}-{i:04d}",
        [container],
        labels=LABEL,
        replicas=1,
        nodeSelector={"type": "kwok"},
        tolerations=[KWOK_TOLERATION],
    )


def policy(limit: int, propagation_delay: str) -> dict[str, Any]:
    """Each phase sets another propagationDelay: the sidecar's settings change, so must every template."""
    return manifests.guarded(
        NAMESPACE,
        name=POLICY,
        labels=LABEL,
        maxConcurrentRollouts=limit,
        hold={"propagationDelay": propagation_delay, "maxHold": "20s"},
    )


def rolling_out(body: dict[str, Any]) -> bool:
    """A rollout is under way, read from the Deployment's status as kubectl rollout status reads
    it (written here, not imported from the operator, which is what is checked)."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    want = spec.get("replicas", 1)
    if (body["metadata"].get("generation") or 0) > (status.get("observedGeneration") or 0):
        return True
    return bool(
        (status.get("updatedReplicas") or 0) < want
        or (status.get("replicas") or 0) > (status.get("updatedReplicas") or 0)
        or (status.get("availableReplicas") or 0) < (status.get("updatedReplicas") or 0)
    )


class RolloutCounter:
    """The most Deployments of the namespace rolling out at once, by a watch of its own."""

    def __init__(self, kubeconfig: str) -> None:
        self.apps = client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig))
        self.rolling: dict[str, bool] = {}
        self.most = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.problem = ""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        version = ""
        while not self.stopped.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.apps.list_namespaced_deployment, NAMESPACE, resource_version=version, timeout_seconds=60
                ):
                    body = event["raw_object"]
                    version = body["metadata"]["resourceVersion"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            self.rolling.pop(body["metadata"]["name"], None)
                        else:
                            self.rolling[body["metadata"]["name"]] = rolling_out(body)
                        self.most = max(self.most, sum(self.rolling.values()))
                    if self.stopped.is_set():
                        return
            except Exception as error:  # the API server's outage ends watches: start again
                self.problem = f"{type(error).__name__}: {error}"[:300]
                version = ""  # a list again: the version may be gone after the outage
                time.sleep(1)

    def take_most(self) -> int:
        with self.lock:
            most, self.most = self.most, sum(self.rolling.values())
            return most

    def stop(self) -> None:
        self.stopped.set()


@dataclass
class Phase:
    name: str
    fault: str
    faults_injected: int = 0
    seconds_to_converge: float = 0.0
    most_rolling_at_once: int = 0
    limit: int = 0
    replica_sets_per_deployment: dict[str, int] = field(default_factory=dict)
    distinct_templates: int = 0
    sidecars_per_template: list[int] = field(default_factory=list)
    operator_restarts: int = 0
    # pod -> restarts in the phase
    restarted_replicas: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


FLEET_FAULTS = ("sigkill-leader", "sigkill-leader-loop", "apiserver-outage")
# Run only when asked for, after the fleet's phases.
FAULTS = (*FLEET_FAULTS, "holds-outage", "webhook-outage")
# The policy's propagationDelay when webhook-outage runs without an earlier phase's policy.
WEBHOOK_OUTAGE_DELAY = "4500ms"


def sidecar_pids(container_id: str) -> list[int]:
    """The host processes of one container: those whose cgroup path names its ID."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id in (entry / "cgroup").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def kill_leader(operator: Operator) -> str:
    """SIGKILL every process of the leading replica's operator container; returns the pod's name."""
    leader = wait_until(operator.leader, 120, "a replica leads")
    pod = operator.kube.get("pod", leader, OPERATOR_NAMESPACE)
    status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == "operator")
    container_id = status["containerID"].split("://", 1)[1]
    pids = sidecar_pids(container_id)
    assert pids, f"no host process of container {container_id[:12]} ({leader})"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return leader


def restarts_by_pod(operator: Operator) -> Counter[str]:
    return Counter(
        {
            p["metadata"]["name"]: sum(s.get("restartCount", 0) for s in p["status"].get("containerStatuses", []))
            for p in operator.pods()
        }
    )


def restarts(operator: Operator) -> int:
    return sum(restarts_by_pod(operator).values())


def normalized_template(body: dict[str, Any]) -> str:
    template = json.loads(json.dumps(body["spec"]["template"]))
    template.get("metadata", {}).get("labels", {}).pop("app", None)
    template.get("metadata", {}).pop("annotations", None)  # restartedAt-style stamps differ per write
    return json.dumps(template, sort_keys=True)


def propagation_delay(body: dict[str, Any]) -> str | None:
    """The propagationDelay the sidecar of this template is given, if it has a sidecar."""
    spec = body["spec"]["template"]["spec"]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        if container["name"] == SIDECAR:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            return env.get(PROPAGATION_ENV)
    return None


def seconds(duration: str | None) -> float | None:
    """A duration as the CRD takes it (sums of <number><ms|s|m|h>), in seconds; None if unreadable.
    The operator writes the policy's value in its own spelling (1500ms as 1.5s): compare values."""
    if duration is None or not re.fullmatch(r"(\d+(\.\d+)?(ms|s|m|h))+", duration):
        return None
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * unit[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ms|s|m|h)", duration))


def carries(body: dict[str, Any], delay: str) -> bool:
    return seconds(propagation_delay(body)) == seconds(delay)


def converged(kube: Kube, n: int, delay: str) -> bool:
    items = kube.items("deployments", NAMESPACE)
    return len(items) == n and all(not rolling_out(d) and carries(d, delay) for d in items)


def check(kube: Kube, phase: Phase, n: int, expected_sets: int) -> None:
    deployments = kube.items("deployments", NAMESPACE)
    sets: dict[str, int] = {}
    for rs in kube.items("replicasets", NAMESPACE):
        owner = next((o["name"] for o in rs["metadata"].get("ownerReferences", [])), "")
        sets[owner] = sets.get(owner, 0) + 1
    counts: dict[str, int] = {}
    for d in deployments:
        count = sets.get(d["metadata"]["name"], 0)
        counts[str(count)] = counts.get(str(count), 0) + 1
        if count != expected_sets:
            phase.problems.append(f"{d['metadata']['name']}: {count} ReplicaSets, expected {expected_sets}")
    phase.replica_sets_per_deployment = counts
    templates = {normalized_template(d) for d in deployments}
    phase.distinct_templates = len(templates)
    if len(templates) != 1:
        phase.problems.append(f"{len(templates)} distinct pod templates among {n} identical Deployments")
    for template in templates:
        spec = json.loads(template)["spec"]
        names = [c["name"] for c in [*spec.get("initContainers", []), *spec["containers"]]]
        phase.sidecars_per_template.append(names.count(SIDECAR))
        if names.count(SIDECAR) != 1 or len(set(names)) != len(names):
            phase.problems.append(f"containers {names}")
        app = next(c for c in spec["containers"] if c["name"] == "app")
        if "preStop" not in (app.get("lifecycle") or {}):
            phase.problems.append("the app container has no preStop")
    if phase.most_rolling_at_once > phase.limit:
        phase.problems.append(f"{phase.most_rolling_at_once} rolled out at once; the limit is {phase.limit}")


def run_phase(
    kube: Kube,
    operator: Operator,
    counter: RolloutCounter,
    phase: Phase,
    *,
    n: int,
    delay: str,
    expected_sets: int,
    injure: Callable[[float], int],
) -> Phase:
    before = restarts_by_pod(operator)
    leader_before = operator.leader()
    counter.take_most()
    started = time.monotonic()
    kube.apply(policy(phase.limit, delay))
    phase.faults_injected = injure(started)
    wait_until(lambda: converged(kube, n, delay), 900, f"{phase.name}: every Deployment carries {delay}", 2)
    phase.seconds_to_converge = round(time.monotonic() - started, 1)
    phase.most_rolling_at_once = counter.take_most()
    # A killed container comes back after kubelet's back-off (up to minutes after repeated
    # kills): wait for it here, so that its restart is counted in the phase that caused it.
    wait_until(
        lambda: (
            sum((restarts_by_pod(operator) - before).values()) >= phase.faults_injected
            and len(operator.serving()) == len(operator.pods())
        ),
        600,
        f"{phase.name}: every operator replica back and serving",
        2,
    )
    restarted = restarts_by_pod(operator) - before
    phase.operator_restarts = sum(restarted.values())
    phase.restarted_replicas = dict(restarted)
    phase.problems.extend(restart_problems(phase.fault, restarted, leader_before, phase.faults_injected))
    check(kube, phase, n, expected_sets)
    return phase


def restart_problems(fault: str, restarted: Counter[str], leader_before: str | None, kills: int) -> list[str]:
    """The operator restarts a phase did not cause. A leader that cannot renew its Lease stops
    (it cannot know whether another replica took over), and kubelet restarts it: in an API
    server outage longer than the renew deadline that is one restart of the replica that led,
    and none of the others, which campaign again without exiting."""
    total = sum(restarted.values())
    if fault != "apiserver-outage":
        return [f"{total} operator restarts for {kills} kills"] if total > kills else []
    problems = [f"{pod} restarted {n} times in the outage" for pod, n in restarted.items() if pod != leader_before]
    if leader_before is not None and restarted[leader_before] > 1:
        problems.append(f"the leader {leader_before} restarted {restarted[leader_before]} times in the outage")
    return problems


def carrying(kube: Kube, delay: str) -> int:
    return sum(1 for d in kube.items("deployments", NAMESPACE) if carries(d, delay))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--outage", type=int, default=30)
    parser.add_argument(
        "--faults",
        type=lambda s: s.split(","),
        default=list(FLEET_FAULTS),
        help=f"which phases, in this order: {','.join(FAULTS)} (default: {','.join(FLEET_FAULTS)})",
    )
    parser.add_argument("--holds-replicas", type=int, default=4, help="holds-outage: pods of the demo app")
    parser.add_argument(
        "--missing-window",
        type=float,
        default=150.0,
        help="holds-outage: seconds after the outage (and the pods' end) before the operator's count "
        "of missing reports is read: its wait for a report, and a margin",
    )
    parser.add_argument(
        "--outage-after",
        type=float,
        default=0.0,
        help="holds-outage: seconds from every pod deleting to the API server's stop (0: at once, as "
        "the sidecars read their Pod; a few: once their holds are under way)",
    )
    parser.add_argument("--webhook-writes", type=int, default=None, help="webhook-outage: creates per round")
    parser.add_argument("--webhook-concurrency", type=int, default=4, help="webhook-outage: creates at a time")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    if unknown := set(args.faults) - set(FAULTS):
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    n, limit = args.deployments, args.limit

    kube = local_cluster_with_fake_nodes(args.nodes)
    operator = install_lameduck(kube)
    # A run stopped before its clean-up leaves its Deployments carrying its last change.
    kube.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s")
    kube.run("create", "namespace", NAMESPACE)
    if set(args.faults) != {"holds-outage"}:  # that phase alone runs on the real node only
        items = [deployment(i) for i in range(n)]
        kube.run(
            "apply",
            "--server-side",
            "-n",
            NAMESPACE,
            "-f",
            "-",
            input=json.dumps({"kind": "List", "apiVersion": "v1", "items": items}),
        )
        wait_until(
            lambda: all(not rolling_out(d) for d in kube.items("deployments", NAMESPACE)), 600, "the fleet is up", 3
        )
    counter = RolloutCounter(kube.kubeconfig)
    phases: list[Phase | HoldsOutage | WebhookOutage] = []

    def kill_halfway(_: float) -> int:
        wait_until(
            lambda: carrying(kube, "1500ms") >= n // 3, 600, f"a third of the {n} Deployments carry the change", 0.5
        )
        kill_leader(operator)
        return 1

    def kill_every(started: float) -> int:
        kills = 0
        while not converged(kube, n, "2500ms") and time.monotonic() - started < 900:
            next_kill = started + (kills + 1) * args.kill_every
            while time.monotonic() < next_kill and not converged(kube, n, "2500ms"):
                time.sleep(1)
            if not converged(kube, n, "2500ms"):
                kill_leader(operator)
                kills += 1
        return kills

    def outage(_: float) -> int:
        wait_until(lambda: carrying(kube, "3500ms") >= limit, 300, "the burst has begun", 0.5)
        subprocess.run(["bash", str(REPO / "hack" / "cluster.sh"), "apiserver-outage", str(args.outage)], check=True)
        return 1

    def holds_outage() -> HoldsOutage:
        """The phase, and the operator's restarts checked as in the API server outage phase."""
        before = restarts_by_pod(operator)
        leader_before = operator.leader()
        phase = run_holds_outage(
            kube,
            operator,
            replicas=args.holds_replicas,
            outage=args.outage,
            missing_window=args.missing_window,
            outage_after=args.outage_after,
        )
        restarted = restarts_by_pod(operator) - before
        phase.operator_restarts = sum(restarted.values())
        phase.restarted_replicas = dict(restarted)
        phase.problems.extend(restart_problems("apiserver-outage", restarted, leader_before, 1))
        return phase

    def webhook_outage() -> WebhookOutage:
        delay = kube.run(
            "get",
            "gracefulpolicy",
            POLICY,
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.hold.propagationDelay}",
            check=False,
        ).stdout.strip()
        if not delay:  # no earlier phase: the policy first, and the fleet carrying it
            delay = WEBHOOK_OUTAGE_DELAY
            kube.apply(policy(limit, delay))
            wait_until(lambda: converged(kube, n, delay), 900, f"every Deployment carries {delay}", 2)
        return run_webhook_outage(
            kube,
            operator,
            namespace=NAMESPACE,
            writes=args.webhook_writes or n,
            concurrency=args.webhook_concurrency,
            make=deployment,
            carries=lambda body: carries(body, delay),
            delay=delay,
        )

    try:
        every = [
            (Phase("leader killed halfway", "sigkill-leader", limit=limit), "1500ms", 2, kill_halfway),
            (
                Phase(f"leader killed every {args.kill_every:.0f} s", "sigkill-leader-loop", limit=limit),
                "2500ms",
                3,
                kill_every,
            ),
            (Phase(f"API server down {args.outage} s", "apiserver-outage", limit=limit), "3500ms", 4, outage),
        ]
        plan = [step for step in every if step[0].fault in args.faults]
        # each phase's change makes one more ReplicaSet per Deployment, after the first one
        plan = [(phase, delay, 2 + i, injure) for i, (phase, delay, _, injure) in enumerate(plan)]
        for phase, delay, sets, injure in plan:
            phases.append(
                run_phase(kube, operator, counter, phase, n=n, delay=delay, expected_sets=sets, injure=injure)
            )
            print(table([p for p in phases if isinstance(p, Phase)]), flush=True)
        if "holds-outage" in args.faults:
            holds = holds_outage()
            phases.append(holds)
            print(fault_holds.table(holds), flush=True)
        if "webhook-outage" in args.faults:
            writes = webhook_outage()
            phases.append(writes)
            print(fault_webhook.table(writes), flush=True)
    finally:
        counter.stop()
        write_result(
            args.out,
            {
                "benchmark": "faults",
                "deployments": n,
                "limit": limit,
                "watch_problem_seen": counter.problem,
                "phases": [asdict(p) for p in phases],
            },
        )
        kube.run("delete", "namespace", NAMESPACE, "--wait=false", check=False)
    print(f"wrote {args.out}")
    return 0 if len(phases) == len(args.faults) and not any(p.problems for p in phases) else 1


def table(phases: list[Phase]) -> str:
    lines = [
        "| fault | injected | converged after | most rolling at once (limit) "
        "| ReplicaSets per Deployment | templates | problems |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in phases:
        lines.append(
            f"| {p.name} | {p.faults_injected} | {p.seconds_to_converge:.0f} s | {p.most_rolling_at_once} ({p.limit}) "
            f"| {p.replica_sets_per_deployment} | {p.distinct_templates} "
            f"| {len(p.problems)}: {'; '.join(p.problems[:3])} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
