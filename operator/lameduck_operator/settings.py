"""Operator settings that shape what lameduck injects; built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from lameduck_operator import __version__

DEFAULT_SIDECAR_IMAGE = f"lameduck/sidecar:{__version__}"
DEFAULT_EXCLUDED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")


def image_repository(image: str) -> str:
    """The image without tag or digest, to recognise our sidecar across versions."""
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


@dataclass(frozen=True)
class SidecarSettings:
    image: str = DEFAULT_SIDECAR_IMAGE
    image_pull_policy: str = "IfNotPresent"
    port: int = 9901
    # Native sidecars (init containers with restartPolicy Always) are GA since 1.33;
    # classic mode keeps older clusters working.
    native: bool = True
    run_as_user: int = 65532
    cpu_request: str = "10m"
    memory_request: str = "48Mi"
    memory_limit: str = "96Mi"


@dataclass(frozen=True)
class Settings:
    sidecar: SidecarSettings = field(default_factory=SidecarSettings)
    # Namespaces no policy may touch (the operator's own is added at start-up).
    excluded_namespaces: frozenset[str] = frozenset(DEFAULT_EXCLUDED_NAMESPACES)
