"""Start-up and shutdown of the operator's parts: API client, fleet loops, watches, leadership, the
webhook server and the HTTP endpoints (http_endpoints.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes import client
from kubernetes import config as kube_config

from lameduck_operator.admission_server import AdmissionServer
from lameduck_operator.config import OperatorConfig
from lameduck_operator.fleet import Fleet
from lameduck_operator.http_endpoints import serve_http
from lameduck_operator.k8s.api import KubeApi
from lameduck_operator.k8s.informer import ApiEndpoint, Informer
from lameduck_operator.k8s.leadership import start_election
from lameduck_operator.learned_delays import LearnedDelays
from lameduck_operator.logic.decision import Decision, Moment, decide
from lameduck_operator.logic.selection import deployment_ref
from lameduck_operator.loop_health import collect_less_often, freeze_what_is_alive, watch_loop_lag
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.readiness_gate import ReadinessGate
from lameduck_operator.shutdown_observer import ShutdownObserver

log = logging.getLogger("lameduck.operator")
GATE_AND_STATUS_THREADS = 12
STOP_EVENTS_SECONDS = 5.0


def kube_api_client(connections: int) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the current kubeconfig; up to
    `connections` kept-alive connections to the API server."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = connections
    try:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kube_config.ConfigException:
        # KUBECONFIG as it is now, not as it was when the client library was imported.
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=configuration
        )
    return client.ApiClient(configuration)


async def fleet_synced_when_listed(fleet: Fleet, deployments: Informer) -> None:
    """The fleet judges nothing before every Deployment is listed (the list comes in pages): a
    leader that began with some would count only their rollouts in progress against the limit."""
    await deployments.synced.wait()
    fleet.synced.set()


def learned_delays_and_shutdown_observer(
    api: KubeApi, metrics: OperatorMetrics, fleet: Fleet
) -> tuple[LearnedDelays, ShutdownObserver]:
    """The learned delays and the shutdown observer, wired to the fleet both ways: its decisions
    read the maxHold learned and its status the shutdowns observed; both ask it which Deployments
    it knows and what governs them, and a Deployment's first history judges it again."""
    known = fleet.deployments.__contains__
    learned = LearnedDelays(api, metrics, known=known, hold_of=fleet.hold_of, history_changed=fleet.enqueue)
    fleet.learned_max_hold = learned.learned_max_hold
    fleet.starting_budget = learned.starting_budget
    shutdown = ShutdownObserver(
        metrics,
        fleet.governing_policy,
        fleet.policy_spec,
        known=known,
        changed=fleet.status.changed,
        post_event=api.post_event,
        learned=learned,
    )
    fleet.status.shutdown_status = shutdown.status_of
    return learned, shutdown


async def list_what_judging_starts_from(api: KubeApi, fleet: Fleet, gate: ReadinessGate) -> ReadinessGate:
    """Policies, namespaces, the sidecars' access and the L7 routes into the fleet, Services and
    slices into the gate; the gate. Policies and namespaces are known before any Deployment is
    judged, so a Deployment is never reverted for want of a policy that simply was not listed yet;
    Services and slices before any pod, so a pod is never let through as selected by no Service
    for want of a Service not listed yet."""
    for policy in await asyncio.to_thread(api.list_policies):
        fleet.policy_seen(policy)
    for namespace in await asyncio.to_thread(api.list_namespaces):
        fleet.namespace_seen(namespace)
    fleet.access.granted = await asyncio.to_thread(api.list_sidecar_access)
    fleet.access.outdated = await asyncio.to_thread(api.list_outdated_sidecar_roles)
    fleet.recheck_access(fleet.access.granted)
    for service in await asyncio.to_thread(api.list_services):
        gate.service_seen(service)
    for endpoint_slice in await asyncio.to_thread(api.list_endpoint_slices):
        gate.slice_seen(endpoint_slice)
    # The L7 routes, with the gate's Services, before any Deployment is judged: one with no
    # history behind a route starts at the starting budget (Gateway API's routes only where its
    # CRDs are installed; kopf watches them from when they are).
    fleet.l7.services = lambda namespace: gate.index.services.get(namespace, {})
    for kind, route in await asyncio.to_thread(api.list_l7_routes):
        fleet.l7.route_seen(route, kind)
    return gate


def on_the_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Callable[[], None]:
    """callback, to be run on loop from another thread (the election's). Once the loop is closed
    the process is stopping and there is nothing left to start or stop: the election's last call
    (its renewal failing as the process ends) is dropped, not raised as an election failure."""

    def call() -> None:
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:
            if not loop.is_closed():
                raise

    return call


async def freeze_when_listed(informers: list[Informer]) -> None:
    await asyncio.gather(*(i.synced.wait() for i in informers))
    freeze_what_is_alive()


@dataclass
class Runtime:
    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    fleet: Fleet | None = None
    gate: ReadinessGate | None = None
    shutdown: ShutdownObserver | None = None
    learned: LearnedDelays | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    http: web.AppRunner | None = None
    admission: AdmissionServer | None = None
    # Set to stop the whole operator (kopf's stop flag): when leadership is lost.
    stop_flag: threading.Event = field(default_factory=threading.Event)
    leading: bool = False
    lost: bool = False
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # The lean watches of Deployments and Pods (their first list marks them synced).
    informers: list[Informer] = field(default_factory=list)

    async def start(self) -> None:
        """Start, or stop what had started and raise (kopf tries again). The HTTP server starts
        once: probes see a starting replica, live and not ready, and no retry binds it twice."""
        if self.http is None:
            self.http = await serve_http(self.metrics, self.config.http_port, healthy=self.live, ready=self.ready)
        try:
            await self._start()
        except BaseException:
            await self._undo_start()
            raise

    async def _undo_start(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.admission is not None:
            await asyncio.to_thread(self.admission.stop)
        self.background, self.informers, self.admission = [], [], None
        self.fleet = self.gate = self.shutdown = self.learned = None

    async def _start(self) -> None:
        collect_less_often()
        self.background.append(asyncio.create_task(watch_loop_lag(self.metrics.loop), name="lameduck-loop-lag"))
        # The API client blocks: every reconcile worker, the gate's writes and the status
        # publisher each need a thread and a pooled connection of their own.
        threads = self.config.reconcile_workers + GATE_AND_STATUS_THREADS
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="lameduck-api"))
        api_client = kube_api_client(threads)
        api = KubeApi(api_client)
        fleet = Fleet(self.config.settings, api, self.metrics, workers=self.config.reconcile_workers)
        self.fleet = fleet
        self.learned, self.shutdown = learned_delays_and_shutdown_observer(api, self.metrics, fleet)
        gate = await list_what_judging_starts_from(api, fleet, ReadinessGate(api, self.metrics))
        self.gate = gate
        # Deployments and Pods, thousands at fleet scale, by lameduck's own lean watches (kopf
        # watches the rest): every replica keeps them, the webhook judges with them.
        endpoint = ApiEndpoint.of(api_client.configuration)
        self.informers = informers = [
            Informer(endpoint, "/apis/apps/v1/deployments", "Deployment", self._deployment_seen),
            Informer(endpoint, "/api/v1/pods", "Pod", self._pod_seen),
        ]
        self.background += [
            *(asyncio.create_task(i.run(), name=f"lameduck-watch-{i.kind.lower()}s") for i in informers),
            asyncio.create_task(self.shutdown.missing.expire_forever(), name="lameduck-missing-reports"),
            asyncio.create_task(freeze_when_listed(informers), name="lameduck-gc-freeze"),
            asyncio.create_task(fleet_synced_when_listed(fleet, informers[0]), name="lameduck-fleet-synced"),
        ]
        await self._serve_webhook()
        if self.config.leader_election:
            loop = asyncio.get_running_loop()
            start_election(
                api_client,
                namespace=self.config.namespace,
                name=self.config.lease_name,
                identity=self.config.identity,
                on_lead=on_the_loop(loop, self._lead),
                on_lost=on_the_loop(loop, self._lose),
            )
        else:
            self._lead()
        log.info(
            "lameduck operator started: %d policies, sidecar %s (%s), excluded namespaces %s",
            len(fleet.policies),
            self.config.settings.sidecar.image,
            "native" if self.config.settings.sidecar.native else "classic",
            ",".join(sorted(self.config.settings.excluded_namespaces)),
        )

    def _deployment_seen(self, body: Mapping[str, Any], deleted: bool) -> None:
        # Both are set before the watches start.
        assert self.fleet is not None
        assert self.shutdown is not None
        self.fleet.deployment_seen(body, deleted=deleted)
        if deleted:
            self.shutdown.deployment_gone(deployment_ref(body))

    def _pod_seen(self, body: Mapping[str, Any], deleted: bool) -> None:
        assert self.gate is not None
        assert self.shutdown is not None
        self.gate.pod_seen(body, deleted=deleted)
        self.shutdown.pod_seen(body, deleted=deleted)

    def _lead(self) -> None:
        """Start reconciling: this process holds the Lease (or runs alone)."""
        if self.fleet is None or self.gate is None or self.leading or self.lost:
            return
        fleet = self.fleet
        self.leading = True
        self.metrics.leader.set(1)
        if self.shutdown is not None:
            self.shutdown.lead()
        self.tasks = [
            asyncio.create_task(fleet.run(), name="lameduck-reconcile"),
            asyncio.create_task(fleet.publish_forever(self.config.status_interval_seconds), name="lameduck-status"),
            asyncio.create_task(self.gate.run(), name="lameduck-readiness-gate"),
        ]
        if self.learned is not None:
            interval = self.config.status_interval_seconds
            self.tasks.append(
                asyncio.create_task(self.learned.publish_forever(interval), name="lameduck-learned-delays")
            )
        log.info("leading as %s: reconciling", self.config.identity)

    def _lose(self) -> None:
        """The Lease may be another's now: stop applying at once, then stop the process, whose
        restart campaigns afresh with nothing of the old leader's state."""
        self.lost = True
        self.leading = False
        self.metrics.leader.set(0)
        for task in self.tasks:
            task.cancel()
        if self.fleet is not None:  # the Deployments' Events still to post are dropped
            self.fleet.reconciler.events.cancel()
        log.warning("lost the leader Lease %s: stopping", self.config.lease_name)
        self.stop_flag.set()

    async def stop(self) -> None:
        for task in [*self.tasks, *self.background]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.background, return_exceptions=True)
        if self.fleet is not None and self.leading:
            # What the last burst did, told now rather than lost with the process.
            try:
                await asyncio.wait_for(self.fleet.tell_pending(), STOP_EVENTS_SECONDS)
            except Exception as err:  # best effort, as every Event
                log.info("could not post the policies' last Events: %s", err)
        if self.admission is not None:
            await asyncio.to_thread(self.admission.stop)
        if self.http is not None:
            await self.http.cleanup()

    def ready(self) -> bool:
        """Policies and namespaces listed, and Deployments and Pods too: before that the webhook
        would judge a write against an empty fleet (no rollout in flight, for one)."""
        listed = bool(self.informers) and all(i.synced.is_set() for i in self.informers)
        return self.fleet is not None and self.fleet.synced.is_set() and listed

    def live(self) -> bool:
        """What /healthz answers: healthy, or still starting (kopf tries a failed start again
        every few seconds: a restart by kubelet would only start it over)."""
        return self.fleet is None or not self.fleet.synced.is_set() or self.healthy()

    def healthy(self) -> bool:
        """A follower is healthy while it serves; a leader while its loops run."""
        if not self.leading:
            return not self.lost
        return bool(self.tasks) and not any(t.done() for t in self.tasks)

    def judge(self, deployment: Any) -> Decision:
        """The decision for a Deployment being written, from what this replica observed. On the webhook's
        thread: it reads what the loop changes by single dict operations (policies, labels, learned)."""
        fleet = self.fleet
        assert fleet is not None
        namespace = str((deployment.get("metadata") or {}).get("namespace"))
        return decide(
            deployment,
            fleet.active_policies(),
            fleet.settings,
            fleet.namespaces.get(namespace),
            fleet.in_flight,
            moment=Moment.ADMISSION,
            learned_max_hold=fleet.learned_max_hold(deployment_ref(deployment)),
            l7_backend=fleet.l7.backend(deployment),
        )

    async def _serve_webhook(self) -> None:
        cert_dir = self.config.webhook_cert_dir
        if cert_dir is None:
            return
        cert, key = Path(cert_dir) / "tls.crt", Path(cert_dir) / "tls.key"
        self.admission = AdmissionServer(self.judge, self.metrics, self.config.webhook_port, cert, key)
        await asyncio.to_thread(self.admission.start)
