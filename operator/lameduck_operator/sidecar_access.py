"""The sidecar's access: its Role and RoleBinding exist exactly in the namespaces where pods run,
or will run, the sidecar, bound to those pods' service accounts.

A namespace is looked at again when one of its Deployments is judged or deleted; a failed
write is retried with a backoff, and a namespace whose older pods still need access that its
templates no longer give is checked again until those pods are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from lameduck_operator.deployment_store import DeploymentStore
from lameduck_operator.logic.rbac import service_accounts_needing_access
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.namespace_writes import NamespaceWrites
from lameduck_operator.ports import CallLater, FleetApi
from lameduck_operator.settings import SidecarSettings

# While pods from older templates still hold access that the templates no longer need.
ACCESS_RECHECK_SECONDS = 10.0
log = logging.getLogger("lameduck.fleet")


class SidecarAccess:
    def __init__(
        self,
        sidecar: SidecarSettings,
        api: FleetApi,
        metrics: OperatorMetrics,
        deployments: DeploymentStore,
        call_later: CallLater,
    ) -> None:
        self.sidecar = sidecar
        self.api = api
        self.metrics = metrics
        self.deployments = deployments
        self.call_later = call_later
        # Namespaces where the sidecar's Role and RoleBinding exist, with their subjects.
        self.granted: dict[str, tuple[str, ...]] = {}
        # Namespaces whose sidecar Role an earlier version wrote with other rules.
        self.outdated: set[str] = set()
        self._dirty = NamespaceWrites("the sidecar's access", "sidecar_rbac", metrics, call_later)
        self._rechecks: set[str] = set()

    def recheck(self, namespaces: Iterable[str]) -> None:
        """Look at these namespaces at the next publish."""
        self._dirty.update(namespaces)

    async def publish(self) -> None:
        await self._dirty.write(self._publish_in)

    async def _publish_in(self, namespace: str) -> None:
        in_namespace = self.deployments.metas_in(namespace)
        templates = service_accounts_needing_access(in_namespace, self.sidecar)
        granted = self.granted.get(namespace, ())
        wanted = templates
        if not set(granted) <= set(templates):
            # Pods of older templates (rolling out after a revert or opt-out) may still run the
            # sidecar, and their holds need the access until they are gone. Pods are listed only
            # here, so a namespace whose templates keep their access costs no listing.
            pods = await self.api.list_pods(namespace)
            running = service_accounts_needing_access(in_namespace, self.sidecar, pods)
            wanted = [sa for sa in running if sa in templates or sa in granted]
            if wanted != templates:
                self._recheck_later(namespace)
        if wanted and (granted != tuple(wanted) or namespace in self.outdated):
            await self.api.apply_sidecar_rbac(namespace, wanted)
            self.granted[namespace] = tuple(wanted)
            self.outdated.discard(namespace)
        elif not wanted and namespace in self.granted:
            await self.api.delete_sidecar_rbac(namespace)
            del self.granted[namespace]

    def _recheck_later(self, namespace: str) -> None:
        if namespace in self._rechecks:
            return
        self._rechecks.add(namespace)

        def due() -> None:
            self._rechecks.discard(namespace)
            self._dirty.add(namespace)

        self.call_later(ACCESS_RECHECK_SECONDS, due)
