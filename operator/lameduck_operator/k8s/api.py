"""FleetApi, GateApi and LearnedApi on the official Kubernetes client: server-side apply with field
manager lameduck. One class, made of one adapter per job: Deployment writes, policy status and
finalizer, the sidecar's RBAC, Events, the readiness gate's pod conditions, the learned
delays' ConfigMaps and the L7 routes listed at start-up."""

from __future__ import annotations

from lameduck_operator.k8s.deployments import DeploymentWriter
from lameduck_operator.k8s.events import EventPoster
from lameduck_operator.k8s.learned import LearnedConfigMaps
from lameduck_operator.k8s.pod_conditions import PodConditions
from lameduck_operator.k8s.policy_writes import PolicyWriter
from lameduck_operator.k8s.routes import RouteLists
from lameduck_operator.k8s.sidecar_rbac import SidecarRbac


class KubeApi(DeploymentWriter, PolicyWriter, SidecarRbac, EventPoster, PodConditions, LearnedConfigMaps, RouteLists):
    """All of lameduck's API calls, on one set of clients (ApiClients)."""
