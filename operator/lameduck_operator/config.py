"""Operator configuration from the environment, read once at start-up."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from lameduck_operator.settings import DEFAULT_EXCLUDED_NAMESPACES, DEFAULT_SIDECAR_IMAGE, Settings, SidecarSettings


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorConfig:
    settings: Settings
    namespace: str
    http_port: int
    status_interval_seconds: float
    log_level: str
    # The admission webhook is served over TLS with the certificate found here; None: not served.
    webhook_cert_dir: str | None = None
    webhook_port: int = 9443
    # Several replicas: only the holder of this Lease (in `namespace`) reconciles.
    leader_election: bool = False
    lease_name: str = "lameduck-operator"
    identity: str = "lameduck-operator"
    # Deployments reconciled at once (each mostly waits on the API server); more is experimental.
    reconcile_workers: int = 8


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from err


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def load_config(env: Mapping[str, str]) -> OperatorConfig:
    """Build the configuration from environment variables (names documented in README)."""
    namespace = env.get("LAMEDUCK_NAMESPACE", "lameduck-system")
    extra = [n.strip() for n in env.get("LAMEDUCK_EXCLUDED_NAMESPACES", "").split(",") if n.strip()]
    sidecar = SidecarSettings(
        image=env.get("LAMEDUCK_SIDECAR_IMAGE", DEFAULT_SIDECAR_IMAGE),
        image_pull_policy=env.get("LAMEDUCK_SIDECAR_IMAGE_PULL_POLICY", "IfNotPresent"),
        port=_int(env, "LAMEDUCK_SIDECAR_PORT", 9901),
        native=_bool(env, "LAMEDUCK_NATIVE_SIDECAR", True),
        cpu_request=env.get("LAMEDUCK_SIDECAR_CPU_REQUEST") or SidecarSettings.cpu_request,
        memory_request=env.get("LAMEDUCK_SIDECAR_MEMORY_REQUEST") or SidecarSettings.memory_request,
        memory_limit=env.get("LAMEDUCK_SIDECAR_MEMORY_LIMIT") or SidecarSettings.memory_limit,
    )
    if not 1 <= sidecar.port <= 65535:
        raise ConfigError(f"LAMEDUCK_SIDECAR_PORT must be a port number, got {sidecar.port}")
    workers = _int(env, "LAMEDUCK_RECONCILE_WORKERS", 8)
    if not 1 <= workers <= 64:
        raise ConfigError(f"LAMEDUCK_RECONCILE_WORKERS must be between 1 and 64, got {workers}")
    settings = Settings(
        sidecar=sidecar,
        excluded_namespaces=frozenset((*DEFAULT_EXCLUDED_NAMESPACES, namespace, *extra)),
    )
    return OperatorConfig(
        settings=settings,
        namespace=namespace,
        http_port=_int(env, "LAMEDUCK_HTTP_PORT", 8080),
        status_interval_seconds=float(_int(env, "LAMEDUCK_STATUS_INTERVAL_MS", 1000)) / 1000,
        log_level=env.get("LAMEDUCK_LOG_LEVEL", "INFO").upper(),
        webhook_cert_dir=env.get("LAMEDUCK_WEBHOOK_CERT_DIR") or None,
        webhook_port=_int(env, "LAMEDUCK_WEBHOOK_PORT", 9443),
        leader_election=_bool(env, "LAMEDUCK_LEADER_ELECTION", False),
        lease_name=env.get("LAMEDUCK_LEASE_NAME") or "lameduck-operator",
        # Unique per process: a restarted pod of the same name is a new candidate.
        identity=f"{env.get('LAMEDUCK_POD_NAME') or socket.gethostname()}_{os.getpid()}",
        reconcile_workers=workers,
    )
