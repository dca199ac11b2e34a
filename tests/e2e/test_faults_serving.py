"""lameduck's webhook under faults on a real cluster: slower than its timeout, its certificate
rotated while it serves, and a certificate and key that do not match.

A fault is made only on what the test creates (its namespace, a proxy pod) or on lameduck's own
install, which is put back exactly afterwards: the values changed, then the objects'
managedFields, so that a later `helm upgrade` finds Helm's ownership as Helm left it. The
certificate tests connect from this machine to the operator pods' IPs to see the certificate
each serves, so the pod network must be reachable from here (it is on the local cluster and on
kind); each waits for kubelet to rewrite a mounted Secret, up to a minute and a half.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.certificates import self_signed
from harness.images import DEMO_IMAGE, DEMO_PYTHON
from harness.install import OPERATOR_NAMESPACE, RELEASE, Operator, carries_lameduck, every_replica_injects
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment as workload
from lameduck_operator.admission_server import CERT_RELOAD_SECONDS
from lameduck_operator.logic.event_batches import QUIET_SECONDS
from lameduck_operator.names import FIELD_MANAGER
from tests.e2e.test_operator import policy, status, told

# The chart names the MutatingWebhookConfiguration after the release (its fullname), the
# operator's Deployment "<fullname>-operator", and its lameduck webhook so.
WEBHOOK_CONFIGURATION = RELEASE
OPERATOR_DEPLOYMENT = f"{RELEASE}-operator"
WEBHOOK_NAME = "deployments.lameduck.dev"
# The operator pods' webhook port (the chart's containerPort `webhook`) and the volume of its pair.
WEBHOOK_PORT = 9443
CERTIFICATE_VOLUME = "webhook-tls"
RELOAD_FAILURES = "lameduck_webhook_certificate_reload_failures_total"
# Until every replica serves a pair written to the Secret: kubelet rewrites a mounted Secret at
# its next sync of the pod (about a minute, plus its cache's delay), and the webhook looks at
# the files every CERT_RELOAD_SECONDS; a look that catches the files half rewritten is refused
# and the next one loads them.
ROTATION_SECONDS = 120 + 3 * CERT_RELOAD_SECONDS
# The proxy delays each answer this long past the webhook's timeoutSeconds.
DELAY_PAST_TIMEOUT_SECONDS = 5.0
PROXY_LABEL = "e2e.lameduck.dev/slow-webhook"
# Server-side dry runs while a certificate changes: at most one per this many seconds.
DRY_RUN_INTERVAL = 0.25
SLOW_PROXY_SCRIPT = (Path(__file__).parent / "slow_tcp_proxy.py").read_text()


# ---- lameduck's own objects, changed by a test and put back exactly -------------------------


def pointed(body: Any, pointer: str) -> Any:
    """The value at a JSON pointer (no escaped characters)."""
    for step in pointer.strip("/").split("/"):
        body = body[int(step)] if isinstance(body, list) else body[step]
    return body


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """An object without what every write changes (its version, a spec's generation)."""
    meta = {k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "generation")}
    return {**body, "metadata": meta}


@dataclass(frozen=True)
class Saved:
    """An object of lameduck's install as it stood before a test changed it."""

    kind: str
    name: str
    namespace: str | None
    body: dict[str, Any]

    @classmethod
    def of(cls, kube: Kube, kind: str, name: str, namespace: str | None = None) -> Saved:
        return cls(kind, name, namespace, kube.get(kind, name, namespace))

    def patch(self, kube: Kube, kind: str, body: object) -> None:
        where = ["-n", self.namespace] if self.namespace else []
        kube.run("patch", self.kind, self.name, *where, f"--type={kind}", "-p", json.dumps(body))

    def replace(self, kube: Kube, pointer: str, value: object) -> None:
        self.patch(kube, "json", [{"op": "replace", "path": pointer, "value": value}])

    def restore(self, kube: Kube, *pointers: str) -> None:
        """The values at pointers as saved; then, in a write that changes no value (so that it
        adds no entry of its own), the managedFields as saved: the writes that changed the
        values made kubectl their owner."""
        self.patch(kube, "json", [{"op": "replace", "path": p, "value": pointed(self.body, p)} for p in pointers])
        self.patch(kube, "merge", {"metadata": {"managedFields": self.body["metadata"]["managedFields"]}})

    def differences(self, kube: Kube) -> list[str]:
        """Where the object differs from what was saved: top-level fields, and metadata's."""
        now, then = comparable(kube.get(self.kind, self.name, self.namespace)), comparable(self.body)
        fields = sorted((set(now) | set(then)) - {"metadata"})
        meta = sorted(set(now["metadata"]) | set(then["metadata"]))
        return [f for f in fields if now.get(f) != then.get(f)] + [
            f"metadata.{f}" for f in meta if now["metadata"].get(f) != then["metadata"].get(f)
        ]


def webhook_index(configuration: dict[str, Any]) -> int:
    return next(i for i, hook in enumerate(configuration["webhooks"]) if hook["name"] == WEBHOOK_NAME)


def lameduck_webhook(kube: Kube) -> dict[str, Any]:
    configuration = kube.get("mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION)
    hook: dict[str, Any] = configuration["webhooks"][webhook_index(configuration)]
    return hook


# ---- writes and dry runs through the webhook -----------------------------------------------


@dataclass(frozen=True)
class DryRun:
    began: float  # time.monotonic()
    seconds: float
    returncode: int | None  # None: kubectl did not return within its own timeout
    injected: bool
    stderr: str


def dry_run(kube: Kube, namespace: str, manifest: dict[str, Any]) -> DryRun:
    """A server-side dry run of creating manifest: the API server calls the webhook as for a
    real write and stores nothing."""
    began = time.monotonic()
    try:
        done = kube.run(
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(manifest),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return DryRun(began, time.monotonic() - began, None, False, "kubectl did not return")
    injected = done.returncode == 0 and carries_lameduck(json.loads(done.stdout))
    return DryRun(began, time.monotonic() - began, done.returncode, injected, done.stderr.strip()[:300])


@dataclass
class DryRuns:
    """dry_run() again and again on a thread, from entering the block until its end, at most one
    per DRY_RUN_INTERVAL: a writer that keeps writing while something changes."""

    kube: Kube
    namespace: str
    manifest: dict[str, Any]
    made: list[DryRun] = field(default_factory=list)  # appended by the thread only; read a copy
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> DryRuns:
        self._thread = threading.Thread(target=self._run, name="dry-runs", daemon=True)
        self._thread.start()
        wait_until(lambda: self.made, 30, "the first dry run is back")
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=150)  # kubectl's own timeout (Kube.run), and then some

    def since(self, moment: float) -> list[DryRun]:
        return [run for run in list(self.made) if run.began >= moment]

    def _run(self) -> None:
        while not self._stop.is_set():
            run = dry_run(self.kube, self.namespace, self.manifest)
            self.made.append(run)
            self._stop.wait(max(0.0, run.began + DRY_RUN_INTERVAL - time.monotonic()))  # the writer's pacing


def failed_reviews(runs: list[DryRun]) -> list[DryRun]:
    """The dry runs kubectl saw fail, or that came back without lameduck: under failurePolicy
    Ignore a review that failed (a handshake refused, a timeout) admits the write unchanged."""
    return [run for run in runs if run.returncode != 0 or not run.injected]


# ---- the slow webhook ------------------------------------------------------------------------


def replace_operator_pods(kube: Kube, operator: Operator) -> None:
    """Delete every operator pod and wait for their replacements to serve (and one to lead): the
    connections the API server kept alive to the old pods' webhook end with them."""
    old = {p["metadata"]["name"] for p in operator.pods()}
    kube.run("delete", "pod", *sorted(old), "-n", OPERATOR_NAMESPACE, "--wait=false")
    wait_until(
        lambda: not old & {p["metadata"]["name"] for p in operator.pods()} and len(operator.serving()) >= len(old),
        180,
        "the operator's pods are replaced and their replacements ready",
        1,
    )
    wait_until(operator.leader, 60, "a replica holds the leader Lease")


def slow_proxy_pod(name: str, labels: dict[str, str], delay: float, upstreams: list[str]) -> dict[str, Any]:
    """A pod of slow_tcp_proxy.py in lameduck's namespace, its port named as the operator's
    webhook port (the webhook Service's targetPort), within the `restricted` Pod Security
    Standard that namespace enforces."""
    proxy = {
        "name": "proxy",
        "image": DEMO_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": [DEMO_PYTHON, "-c", SLOW_PROXY_SCRIPT, str(WEBHOOK_PORT), str(delay), *upstreams],
        "ports": [{"name": "webhook", "containerPort": WEBHOOK_PORT}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [proxy],
        },
    }


def logged_lines(kube: Kube, pod: str, namespace: str, event: str) -> list[dict[str, Any]]:
    """The pod's JSON log lines of that event."""
    text = kube.run("logs", pod, "-n", namespace, check=False).stdout
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and f'"event": "{event}"' in line]


def lists_ready(kube: Kube, namespace: str, service: str, pod: str) -> bool:
    slices = kube.items("endpointslices", namespace, f"kubernetes.io/service-name={service}")
    return any(
        (e.get("targetRef") or {}).get("name") == pod and (e.get("conditions") or {}).get("ready")
        for s in slices
        for e in s.get("endpoints") or []
    )


def test_a_webhook_slower_than_its_timeout_admits_writes_unchanged_in_time_and_the_reconciler_injects_them(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    """The webhook Service is pointed at a proxy to the operator pods that passes every answer
    on timeoutSeconds + 5 s late (the TLS handshake's and each review's): the webhook answers,
    but too late. A Deployment written under an `Immediate` policy is admitted after the API
    server waited out the timeout, within timeoutSeconds + 2 s, unchanged; once the Service is
    back, the reconciler injects it and says so in the policy's `Injected` Event.

    Pointing the Service elsewhere leaves the connections the API server keeps alive to the
    operator pods (Go's client reuses them; the webhook keeps them 120 s), which would bypass
    the proxy: the operator pods are replaced first. Delaying only the handshake would not do:
    Go's client (1.23 on) finishes a dial its request gave up on and keeps the connection for
    the next request. The proxy is in lameduck's namespace, as a Service selects only there;
    TLS passes through it, so the API server verifies the webhook's own certificate."""
    kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
    probe = workload("probe", {"tier": "web"})
    every_replica_injects(kube, namespace, probe)
    hook = lameduck_webhook(kube)
    timeout = int(hook["timeoutSeconds"])
    target = hook["clientConfig"]["service"]
    assert target["namespace"] == OPERATOR_NAMESPACE
    service = Saved.of(kube, "service", target["name"], OPERATOR_NAMESPACE)
    proxy = f"e2e-slow-webhook-{namespace.rsplit('-', 1)[1]}"
    selector = {PROXY_LABEL: proxy}
    try:
        service.replace(kube, "/spec/selector", selector)
        replace_operator_pods(kube, operator)
        serving = operator.serving()
        upstreams = [
            f"{p['status']['podIP']}:{WEBHOOK_PORT}" for p in operator.pods() if p["metadata"]["name"] in serving
        ]
        kube.apply(slow_proxy_pod(proxy, selector, timeout + DELAY_PAST_TIMEOUT_SECONDS, upstreams))
        wait_until(lambda: logged_lines(kube, proxy, OPERATOR_NAMESPACE, "listening"), 120, "the proxy listens", 1)
        wait_until(
            lambda: lists_ready(kube, OPERATOR_NAMESPACE, service.name, proxy),
            60,
            f"the Service {service.name} lists the proxy",
        )

        def through_the_proxy() -> DryRun | None:
            run = dry_run(kube, namespace, probe)
            return run if run.returncode == 0 and run.seconds >= timeout - 0.5 and not run.injected else None

        wait_until(through_the_proxy, 60, "a dry run waits out the webhook's timeout and is admitted unchanged", 1)
        started = time.monotonic()
        created = kube.run(
            "apply", "-o", "json", "-n", namespace, "-f", "-", input=json.dumps(workload("web", {"tier": "web"}))
        )
        admitted_in = time.monotonic() - started
        accepted = logged_lines(kube, proxy, OPERATOR_NAMESPACE, "accepted")
        ended = logged_lines(kube, proxy, OPERATOR_NAMESPACE, "ended")
    finally:
        service.restore(kube, "/spec/selector")
        kube.run("delete", "pod", proxy, "-n", OPERATOR_NAMESPACE, "--ignore-not-found", "--timeout=60s")
    print(
        json.dumps(
            {
                "timeout_seconds": timeout,
                "admitted_in_seconds": round(admitted_in, 3),
                "proxy_accepted": len(accepted),
                "proxy_ended": ended,
            }
        )
    )
    assert service.differences(kube) == [], "the webhook's Service is as it was"
    admitted = json.loads(created.stdout)
    assert timeout - 0.5 <= admitted_in < timeout + 2, f"the write waited {admitted_in:.1f}s (timeout {timeout}s)"
    assert not carries_lameduck(admitted), "admitted unchanged"
    annotations = admitted["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith("lameduck.dev/")], annotations
    assert accepted, "the calls went through the proxy"

    every_replica_injects(kube, namespace, probe)  # the webhook answers in time again

    def injected_web() -> dict[str, Any] | None:
        stored = kube.get("deployment", "web", namespace)
        return stored if carries_lameduck(stored) else None

    stored = wait_until(injected_web, 60, "the reconciler injects web")
    assert FIELD_MANAGER in {e["manager"] for e in stored["metadata"]["managedFields"]}, "by the reconciler"
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 60, "the policy reports web compliant")
    wait_until(
        lambda: "web" in told(kube, namespace, "Injected", "web"),
        QUIET_SECONDS + 30,
        "the policy's Injected Event names web",
    )


# ---- the webhook's certificate ----------------------------------------------------------------


def fingerprint(pem: bytes) -> str:
    """sha256 of the first certificate in pem (DER), as a TLS client sees it served."""
    first = pem.decode().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first.strip() + "\n")).hexdigest()


def served_fingerprint(ip: str, server_name: str) -> str | None:
    """The fingerprint of the certificate the webhook at ip serves; None if none came."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only looked at, never trusted
    try:
        with (
            socket.create_connection((ip, WEBHOOK_PORT), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return hashlib.sha256(der).hexdigest() if der else None


@dataclass(frozen=True)
class Pair:
    cert: bytes  # PEM
    key: bytes


def new_pair(folder: Path, names: list[str]) -> Pair:
    """A new self-signed pair for the webhook's names: its certificate is its own CA."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(folder, names[0], ",".join(f"DNS:{n}" for n in names))
    return Pair(cert.read_bytes(), key.read_bytes())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bundle_of(*certificates: bytes) -> bytes:
    """One PEM bundle of several (the API server trusts each CA in a caBundle)."""
    return b"".join(c if c.endswith(b"\n") else c + b"\n" for c in certificates)


@dataclass(frozen=True)
class WebhookCertificate:
    """The webhook's serving pair (the Secret the operator pods mount) and the CA bundle the API
    server trusts it by (the MutatingWebhookConfiguration's caBundle), as the test found them."""

    secret: Saved
    configuration: Saved
    service: dict[str, Any]  # the webhook's clientConfig.service

    @classmethod
    def of(cls, kube: Kube) -> WebhookCertificate:
        pod_spec = kube.get("deployment", OPERATOR_DEPLOYMENT, OPERATOR_NAMESPACE)["spec"]["template"]["spec"]
        secret = next(v["secret"]["secretName"] for v in pod_spec["volumes"] if v["name"] == CERTIFICATE_VOLUME)
        configuration = Saved.of(kube, "mutatingwebhookconfiguration", WEBHOOK_CONFIGURATION)
        service = configuration.body["webhooks"][webhook_index(configuration.body)]["clientConfig"]["service"]
        return cls(Saved.of(kube, "secret", secret, OPERATOR_NAMESPACE), configuration, service)

    @property
    def bundle_pointer(self) -> str:
        return f"/webhooks/{webhook_index(self.configuration.body)}/clientConfig/caBundle"

    @property
    def bundle(self) -> bytes:
        return base64.b64decode(pointed(self.configuration.body, self.bundle_pointer))

    @property
    def fingerprint(self) -> str:
        return fingerprint(base64.b64decode(self.secret.body["data"]["tls.crt"]))

    @property
    def server_name(self) -> str:
        """The name the API server checks the served certificate against."""
        return f"{self.service['name']}.{self.service['namespace']}.svc"

    @property
    def names(self) -> list[str]:
        """The names the chart's certificate has (lameduck.webhookDNSNames)."""
        return [self.server_name, self.service["name"], f"{self.service['name']}.{self.service['namespace']}"]

    def trust(self, kube: Kube, bundle: bytes) -> None:
        self.configuration.replace(kube, self.bundle_pointer, b64(bundle))

    def serve(self, kube: Kube, cert: bytes, key: bytes, ca: bytes | None = None) -> None:
        """Write the pair to the Secret (and ca.crt, the CA the chart keeps beside it)."""
        data = {"tls.crt": b64(cert), "tls.key": b64(key)} | ({"ca.crt": b64(ca)} if ca else {})
        self.secret.patch(kube, "merge", {"data": data})

    def restore(self, kube: Kube, operator: Operator, also_trusted: bytes) -> None:
        """Back to the pair and bundle saved, failing no review on the way: the bundle trusts
        also_trusted (what may be served now) beside the original while the replicas switch."""
        self.trust(kube, bundle_of(self.bundle, also_trusted))
        self.secret.restore(kube, "/data")
        wait_until(
            lambda: every_replica_serves(operator, self.server_name, self.fingerprint),
            ROTATION_SECONDS,
            "every replica serves the original certificate again",
            2,
        )
        self.configuration.restore(kube, self.bundle_pointer)

    def differences(self, kube: Kube) -> list[str]:
        return [f"secret {d}" for d in self.secret.differences(kube)] + [
            f"webhook configuration {d}" for d in self.configuration.differences(kube)
        ]


def served(operator: Operator, server_name: str) -> dict[str, str | None]:
    """Per serving replica, the fingerprint of the certificate it serves."""
    running = operator.serving()
    return {
        p["metadata"]["name"]: served_fingerprint(p["status"]["podIP"], server_name)
        for p in operator.pods()
        if p["metadata"]["name"] in running
    }


def every_replica_serves(operator: Operator, server_name: str, expected: str) -> bool:
    found = served(operator, server_name)
    return bool(found) and set(found.values()) == {expected}


def assert_served_as_the_secret_says(operator: Operator, certificate: WebhookCertificate) -> None:
    """Before a test changes anything: each replica serves the Secret's certificate, as seen
    from here (None: nothing seen, the pod network not reachable from this machine)."""
    found = served(operator, certificate.server_name)
    assert set(found.values()) == {certificate.fingerprint}, f"the replicas serve {found}"


def test_a_certificate_and_key_that_do_not_match_are_refused_counted_and_the_working_pair_kept(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """The Secret gets a certificate and another pair's key, while a client keeps writing: each
    replica counts the refused pair in lameduck_webhook_certificate_reload_failures_total, goes
    on serving the certificate it had, and every review succeeds. (Loaded into the context being
    served, such a pair left it with the new certificate and the old key, and every handshake
    failed.)"""
    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    writes = workload("web", {"tier": "web"})
    every_replica_injects(kube, namespace, writes)
    certificate = WebhookCertificate.of(kube)
    assert_served_as_the_secret_says(operator, certificate)
    replicas = sorted(operator.serving())
    refused_before = {pod: operator.metric(RELOAD_FAILURES, pod=pod) for pod in replicas}
    one, other = new_pair(tmp_path / "one", certificate.names), new_pair(tmp_path / "other", certificate.names)
    try:
        with DryRuns(kube, namespace, writes) as runs:
            certificate.serve(kube, one.cert, other.key)
            wait_until(
                lambda: all(operator.metric(RELOAD_FAILURES, pod=pod) > refused_before[pod] for pod in replicas),
                ROTATION_SECONDS,
                f"every replica counts the refused pair in {RELOAD_FAILURES}",
                2,
            )
            counted = time.monotonic()
            wait_until(lambda: len(runs.since(counted)) >= 5, 60, "dry runs after the pair was refused")
        made = list(runs.made)
        kept = served(operator, certificate.server_name)
    finally:
        # The pair served never changed: the files go back to it at kubelet's next sync of the
        # pod, and nothing is reloaded. (The rotation test, next, waits until they have.)
        certificate.secret.restore(kube, "/data")
    failed = failed_reviews(made)
    print(json.dumps({"dry_runs": len(made), "failed": len(failed), "served": kept}))
    assert certificate.differences(kube) == [], "the Secret is as it was"
    assert set(kept) >= set(replicas), f"the same replicas serve: {kept}"
    assert set(kept.values()) == {certificate.fingerprint}, "each replica serves the certificate it had"
    assert not failed, f"{len(failed)} of {len(made)} dry runs failed or came back unchanged: {failed[:5]}"


def test_a_certificate_rotated_while_the_webhook_serves_fails_no_review_and_is_served_from_then_on(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """A new pair and CA bundle, written while a client keeps writing (server-side dry runs, each
    one review): the bundle first trusts both CAs, then the Secret gets the new pair, and once
    every replica serves it (seen from here, per pod), the bundle trusts only the new CA. Every
    dry run comes back injected (under failurePolicy Ignore a failed review would admit it
    unchanged, and kubectl would see no error), and afterwards each replica serves the new
    certificate. The chart's README rotates by deleting the Secret and upgrading, which
    changes the bundle before the pods reload (writes meanwhile are admitted unchanged, as it
    says); the overlap here is what rotating without that gap takes. The original pair and
    bundle are put back the same way."""
    kube.apply(policy("web", namespace, selector={"matchLabels": {"tier": "web"}}))
    writes = workload("web", {"tier": "web"})
    every_replica_injects(kube, namespace, writes)
    certificate = WebhookCertificate.of(kube)
    assert_served_as_the_secret_says(operator, certificate)
    new = new_pair(tmp_path / "new", certificate.names)
    try:
        with DryRuns(kube, namespace, writes) as runs:
            certificate.trust(kube, bundle_of(certificate.bundle, new.cert))
            written = time.monotonic()
            certificate.serve(kube, new.cert, new.key, ca=new.cert)
            wait_until(
                lambda: every_replica_serves(operator, certificate.server_name, fingerprint(new.cert)),
                ROTATION_SECONDS,
                "every replica serves the new certificate",
                2,
            )
            rotated_in = time.monotonic() - written
            certificate.trust(kube, new.cert)
            dropped = time.monotonic()
            wait_until(
                lambda: len(runs.since(dropped + 5)) >= 5,
                60,
                "dry runs from 5 s after the old CA was dropped",
            )
        made = list(runs.made)
    finally:
        certificate.restore(kube, operator, also_trusted=new.cert)
    failed = failed_reviews(made)
    print(json.dumps({"dry_runs": len(made), "failed": len(failed), "rotated_in_seconds": round(rotated_in, 1)}))
    assert certificate.differences(kube) == [], "the Secret and the webhook configuration are as they were"
    assert not failed, f"{len(failed)} of {len(made)} dry runs failed or came back unchanged: {failed[:5]}"
    every_replica_injects(kube, namespace, writes)
