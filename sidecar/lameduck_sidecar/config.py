"""Sidecar settings from the environment the operator sets (downward API and policy)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lameduck_sidecar.hold import HoldSettings
from lameduck_sidecar.lame_duck import LameDuckTarget, parse_target
from lameduck_sidecar.names import Env
from lameduck_sidecar.traffic import Probe, parse_probes

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    pass


def seconds(name: str, text: str) -> float:
    if not re.fullmatch(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+", text):
        raise ConfigError(f"{name} must be a duration such as 2s or 1m30s, got {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def _probes(text: str) -> tuple[Probe, ...]:
    try:
        probes = parse_probes(text)
    except ValueError as err:
        raise ConfigError(f"{Env.PROBES} takes port:periodSeconds items, got {text!r}") from err
    if any(p.period <= 0 or not 0 < p.port < 65536 for p in probes):
        raise ConfigError(f"{Env.PROBES} takes port:periodSeconds items, got {text!r}")
    return probes


def host_port(host: str, port: str | int) -> str:
    """host:port for a URL; an IPv6 address goes in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@dataclass(frozen=True)
class SidecarConfig:
    pod_name: str
    namespace: str
    pod_uid: str
    pod_ip: str
    host_ip: str
    port: int
    app_ports: frozenset[int]
    hold: HoldSettings
    probes: tuple[Probe, ...]
    native: bool
    policy: str
    api_url: str | None
    token_file: str
    ca_file: str
    proc_net: str = "/proc/net"
    lame_duck: LameDuckTarget | None = None  # the app's lame-duck mode, when the policy names one


def load_config(env: Mapping[str, str]) -> SidecarConfig:
    def duration(name: str, default: str) -> float:
        return seconds(name, env.get(name) or default)

    try:
        port = int(env.get(Env.PORT, "9901"))
        app_ports = frozenset(int(p) for p in env.get(Env.APP_PORTS, "").split(",") if p.strip())
    except ValueError as err:
        raise ConfigError(f"{Env.PORT} and {Env.APP_PORTS} take port numbers: {err}") from err
    hold = HoldSettings(
        propagation_delay=duration(Env.PROPAGATION_DELAY, "2s"),
        quiet_period=duration(Env.QUIET_PERIOD, "1s"),
        max_hold=duration(Env.MAX_HOLD, "30s"),
        api_timeout=duration(Env.API_TIMEOUT, "3s"),
        fallback_delay=duration(Env.FALLBACK_DELAY, "10s"),
        drain_timeout=duration(Env.DRAIN_TIMEOUT, "0s"),
        max_hold_cap=seconds(Env.MAX_HOLD_CAP, env[Env.MAX_HOLD_CAP]) if env.get(Env.MAX_HOLD_CAP) else None,
    )
    lame_duck_text = env.get(Env.LAME_DUCK, "")
    lame_duck = parse_target(lame_duck_text) if lame_duck_text else None
    if lame_duck_text and lame_duck is None:
        raise ConfigError(f"{Env.LAME_DUCK} takes <port><path> such as 8080/lameduck, got {lame_duck_text!r}")
    host, api_port = env.get(Env.KUBERNETES_SERVICE_HOST), env.get(Env.KUBERNETES_SERVICE_PORT, "443")
    default_url = f"https://{host_port(host, api_port)}" if host else None
    secrets = "/var/run/secrets/kubernetes.io/serviceaccount"
    return SidecarConfig(
        pod_name=env.get(Env.POD_NAME, ""),
        namespace=env.get(Env.POD_NAMESPACE, ""),
        pod_uid=env.get(Env.POD_UID, ""),
        pod_ip=env.get(Env.POD_IP, ""),
        host_ip=env.get(Env.HOST_IP, ""),
        port=port,
        app_ports=app_ports,
        hold=hold,
        probes=_probes(env.get(Env.PROBES, "")),
        native=env.get(Env.NATIVE, "true").lower() == "true",
        policy=env.get(Env.POLICY, ""),
        api_url=env.get(Env.API_URL) or default_url,
        token_file=env.get(Env.API_TOKEN_FILE, f"{secrets}/token"),
        ca_file=env.get(Env.API_CA_FILE, f"{secrets}/ca.crt"),
        proc_net=env.get(Env.PROC_NET) or "/proc/net",
        lame_duck=lame_duck,
    )
