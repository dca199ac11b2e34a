"""bench/faults.py's webhook-outage phase: Deployment writes while the webhook has no endpoint.

Two rounds of the same M creates of kwok Deployments under the benchmark's policy, a few at a
time, each timed on the client (wall time of the create call): first with the operator up (the
webhook injects each), then with the operator's Deployment scaled to 0 and the webhook
Service's endpoints empty (the webhook fails open: each must be admitted unchanged). Then the
operator is scaled back to exactly its replicas and the phase times how long the reconciler
takes to inject every Deployment of the second round (each carries the policy's
propagationDelay). The first round's Deployments are deleted before the second; the second's at
the end.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config

from bench.fault_checks import lameduck_changes, latency_summary
from harness.install import OPERATOR_NAMESPACE, OPERATOR_SELECTOR, Operator, carries_lameduck
from harness.kube import Kube, wait_until

# The chart's MutatingWebhookConfiguration (release `lameduck`), which names the webhook's Service.
WEBHOOK_CONFIGURATION = "lameduck"
ROUND_LABEL = "faults-webhook-round"
UP, DOWN = "up", "down"


@dataclass
class WriteRound:
    operator: str  # "up", or "down": scaled to 0
    writes: int = 0
    failed: int = 0
    latency_ms: dict[str, float | int | None] = field(default_factory=dict)
    injected_at_admission: int = 0
    unchanged_at_admission: int = 0
    seconds: float = 0.0  # the whole round
    errors: list[str] = field(default_factory=list)  # the first few


@dataclass
class WebhookOutage:
    name: str
    fault: str = "webhook-outage"
    writes: int = 0
    concurrency: int = 0
    propagation_delay: str = ""
    operator_deployment: str = ""
    operator_replicas: int = 0  # before the phase; restored to exactly this
    webhook_service: str = ""
    webhook_timeout_seconds: int | None = None
    rounds: list[WriteRound] = field(default_factory=list)
    seconds_until_no_endpoints: float | None = None
    # after the operator was scaled back: every replica serving, every Deployment injected
    seconds_until_serving: float | None = None
    seconds_until_all_injected: float | None = None
    replicas_restored: int | None = None
    commands: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class Write:
    name: str
    seconds: float
    stored: dict[str, Any] | None
    error: str = ""


def timed_creates(kubeconfig: str, namespace: str, bodies: list[dict[str, Any]], concurrency: int) -> list[Write]:
    """Create each Deployment, `concurrency` at a time (one client and thread each, its
    connection opened before the clock starts), timing each call on the client."""
    apis = [client.AppsV1Api(config.new_client_from_config(config_file=kubeconfig)) for _ in range(concurrency)]
    for api in apis:
        api.list_namespaced_deployment(namespace, limit=1)
    shares: list[list[Write]] = [[] for _ in apis]

    def create(index: int) -> None:
        # Raw JSON in and out, not model objects: without preloading, the client returns the
        # urllib3 response, whose body is read inside the timing (the response is parsed after).
        api: Any = apis[index]
        for body in bodies[index::concurrency]:
            started = time.monotonic()
            try:
                response = api.create_namespaced_deployment(
                    namespace, body, _preload_content=False, _request_timeout=60
                )
                data = response.data
                seconds = time.monotonic() - started
                response.release_conn()
                stored: dict[str, Any] | None = json.loads(data)
                error = ""
            except Exception as failure:  # a refused or failed write is a result here
                seconds = time.monotonic() - started
                stored, error = None, f"{type(failure).__name__}: {failure}"[:300]
            shares[index].append(Write(body["metadata"]["name"], seconds, stored, error))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [write for share in shares for write in share]


def write_round(operator: str, writes: list[Write], seconds: float) -> WriteRound:
    """A round's figures: every write's latency, failed or not, and how the API server stored each."""
    done = [w.stored for w in writes if w.stored is not None]
    return WriteRound(
        operator,
        writes=len(writes),
        failed=len(writes) - len(done),
        latency_ms=latency_summary([w.seconds for w in writes]),
        injected_at_admission=sum(1 for stored in done if carries_lameduck(stored)),
        unchanged_at_admission=sum(1 for stored in done if not lameduck_changes(stored)),
        seconds=round(seconds, 1),
        errors=[f"{w.name}: {w.error}" for w in writes if w.error][:5],
    )


def run_webhook_outage(
    kube: Kube,
    operator: Operator,
    *,
    namespace: str,
    writes: int,
    concurrency: int,
    make: Callable[[int, str], dict[str, Any]],
    carries: Callable[[dict[str, Any]], bool],
    delay: str,
) -> WebhookOutage:
    """The phase, recorded even when a wait runs out (its problems say where it stopped).
    make(i, prefix): the i-th Deployment of a round, named with prefix; carries(d): d carries
    the policy's propagationDelay `delay`."""
    phase = WebhookOutage("webhook without endpoints", writes=writes, concurrency=concurrency, propagation_delay=delay)
    run = WebhookRun(kube, operator, phase, namespace, make)
    try:
        run.find_operator()
        run.round(UP)
        run.delete_round(UP)
        run.scale_to_zero()
        run.round(DOWN)
        run.scale_back(carries)
    except (AssertionError, subprocess.SubprocessError) as error:
        phase.problems.append(f"stopped early: {error}"[:1000])
    finally:
        run.clean_up()
    return phase


class WebhookRun:
    def __init__(
        self,
        kube: Kube,
        operator: Operator,
        phase: WebhookOutage,
        namespace: str,
        make: Callable[[int, str], dict[str, Any]],
    ) -> None:
        self.kube = kube
        self.operator = operator
        self.phase = phase
        self.namespace = namespace
        self.make = make

    def kubectl(self, *args: str) -> None:
        self.phase.commands.append("kubectl " + " ".join(args))
        self.kube.run(*args)

    def find_operator(self) -> None:
        phase = self.phase
        found_all = self.kube.items("deployments", OPERATOR_NAMESPACE, OPERATOR_SELECTOR)
        assert len(found_all) == 1, f"{len(found_all)} operator Deployments ({OPERATOR_SELECTOR})"
        found = found_all[0]
        phase.operator_deployment = found["metadata"]["name"]
        phase.operator_replicas = found["spec"]["replicas"]
        webhook = self.kube.get("mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION)["webhooks"][0]
        phase.webhook_service = webhook["clientConfig"]["service"]["name"]
        phase.webhook_timeout_seconds = webhook.get("timeoutSeconds")
        wait_until(
            lambda: len(self.operator.serving()) == phase.operator_replicas,
            300,
            f"{phase.operator_replicas} operator replicas serving",
            2,
        )

    def bodies(self, which: str) -> list[dict[str, Any]]:
        made = [self.make(i, f"wh-{which}") for i in range(self.phase.writes)]
        for body in made:
            body["metadata"].setdefault("labels", {})[ROUND_LABEL] = which
        return made

    def round(self, which: str) -> None:
        phase = self.phase
        started = time.monotonic()
        writes = timed_creates(self.kube.kubeconfig, self.namespace, self.bodies(which), phase.concurrency)
        done = write_round(which, writes, time.monotonic() - started)
        phase.rounds.append(done)
        if done.failed:
            phase.problems.append(f"operator {which}: {done.failed} of {done.writes} writes failed: {done.errors[:2]}")
        if which == UP and done.injected_at_admission != done.writes:
            phase.problems.append(f"operator up: {done.writes - done.injected_at_admission} writes not injected")
        if which == DOWN:
            phase.problems.extend(
                f"operator down: {w.name} admitted with {', '.join(changes)}"
                for w in writes
                if w.stored is not None and (changes := lameduck_changes(w.stored))
            )

    def delete_round(self, which: str) -> None:
        selector = f"{ROUND_LABEL}={which}"
        self.kubectl("delete", "deployments", "-n", self.namespace, "-l", selector, "--wait=false")
        wait_until(
            lambda: not self.kube.items("deployments", self.namespace, selector),
            300,
            f"the Deployments of round {which} are gone",
            2,
        )

    def scale_to_zero(self) -> None:
        phase = self.phase
        self.kubectl("scale", f"deployment/{phase.operator_deployment}", "-n", OPERATOR_NAMESPACE, "--replicas=0")
        started = time.monotonic()
        selector = f"kubernetes.io/service-name={phase.webhook_service}"
        wait_until(
            lambda: (
                not any(s.get("endpoints") for s in self.kube.items("endpointslices", OPERATOR_NAMESPACE, selector))
            ),
            180,
            f"the Service {phase.webhook_service} has no endpoint",
            0.5,
        )
        phase.seconds_until_no_endpoints = round(time.monotonic() - started, 1)

    def scale_back(self, carries: Callable[[dict[str, Any]], bool]) -> None:
        phase = self.phase
        replicas = f"--replicas={phase.operator_replicas}"
        self.kubectl("scale", f"deployment/{phase.operator_deployment}", "-n", OPERATOR_NAMESPACE, replicas)
        started = time.monotonic()
        wait_until(
            lambda: len(self.operator.serving()) == phase.operator_replicas,
            300,
            f"{phase.operator_replicas} operator replicas serving again",
            1,
        )
        phase.seconds_until_serving = round(time.monotonic() - started, 1)

        def all_injected() -> bool:
            items = self.kube.items("deployments", self.namespace, f"{ROUND_LABEL}={DOWN}")
            return len(items) == phase.writes and all(carries(d) for d in items)

        wait_until(all_injected, 900, f"the reconciler has injected all {phase.writes} Deployments", 2)
        phase.seconds_until_all_injected = round(time.monotonic() - started, 1)

    def clean_up(self) -> None:
        """The operator's replica count exactly as it was, and neither round's Deployments left,
        whatever happened before; what fails here is a problem of the phase."""
        for step in (self.restore_replicas, lambda: self.delete_round(UP), lambda: self.delete_round(DOWN)):
            try:
                step()
            except (AssertionError, subprocess.SubprocessError) as error:
                self.phase.problems.append(f"clean-up: {error}"[:500])

    def restore_replicas(self) -> None:
        phase = self.phase
        if not phase.operator_deployment:
            return
        name = f"deployment/{phase.operator_deployment}"
        read = ["get", name, "-n", OPERATOR_NAMESPACE, "-o", "jsonpath={.spec.replicas}"]
        if self.kube.run(*read).stdout.strip() != str(phase.operator_replicas):
            self.kubectl("scale", name, "-n", OPERATOR_NAMESPACE, f"--replicas={phase.operator_replicas}")
        phase.replicas_restored = int(self.kube.run(*read).stdout.strip())
        if phase.replicas_restored != phase.operator_replicas:
            phase.problems.append(f"the operator has {phase.replicas_restored} replicas, not {phase.operator_replicas}")


def table(phase: WebhookOutage) -> str:
    lines = [
        "| round | writes | failed | p50 | p90 | p99 | max | injected at admission | unchanged at admission |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for each in phase.rounds:
        ms = each.latency_ms
        title = f"operator up ({phase.operator_replicas} replicas)" if each.operator == UP else "operator scaled to 0"
        lines.append(
            f"| {title} | {each.writes} | {each.failed} | {ms.get('p50')} ms | {ms.get('p90')} ms "
            f"| {ms.get('p99')} ms | {ms.get('max')} ms | {each.injected_at_admission} "
            f"| {each.unchanged_at_admission} |"
        )
    lines.append(
        f"\nscaled back to {phase.replicas_restored} replicas: serving after {phase.seconds_until_serving} s, "
        f"all {phase.writes} injected by the reconciler after {phase.seconds_until_all_injected} s; "
        f"{len(phase.problems)} problems: {'; '.join(phase.problems[:3])}"
    )
    return "\n".join(lines)
