"""`lameduck-sidecar`: the HTTP endpoint the app containers' preStop calls; probes and metrics.

Idle until the first call to the hold: idle.py serves the port with what that needs and no more
(no asyncio, no ssl, no API client). That call loads the hold's machinery (serving.py), which
serves the port from then on; an idle pod that is never deleted never loads it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path

from lameduck_sidecar.config import ConfigError, SidecarConfig, load_config
from lameduck_sidecar.endpoint import OwnConnections
from lameduck_sidecar.idle import IdleServer, Signals
from lameduck_sidecar.metrics import SidecarMetrics
from lameduck_sidecar.tcp import node_addresses


def listening_sockets(port: int) -> list[socket.socket]:
    """The sidecar's port on every address of both families the pod has: kubelet calls the
    preStop hook and the readiness probe on the pod IP, IPv4 or IPv6. A family the pod lacks
    is left out; none at all is an error."""
    found: list[socket.socket] = []
    errors = []
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as err:
            errors.append(f"{address}: {err}")
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as err:
            sock.close()
            errors.append(f"{address}: {err}")
            continue
        found.append(sock)
    if not found:
        raise OSError(f"cannot listen on port {port}: " + "; ".join(errors))
    return found


def run(config: SidecarConfig) -> None:
    """Serve the port idle; from the first call to the hold on, with the hold's machinery."""
    metrics = SidecarMetrics()
    own = OwnConnections()
    node = node_addresses(config.host_ip, Path(config.proc_net))
    sockets = listening_sockets(config.port)
    signals = Signals().install()
    logging.getLogger("lameduck.sidecar").info(
        json.dumps(
            {
                "event": "start",
                "pod": config.pod_name,
                "port": config.port,
                "native": config.native,
                "listening": [str(s.getsockname()[0]) for s in sockets],
                "node_addresses": sorted(str(a) for a in node),
                "probes": [f"{p.port}:{p.period:g}" for p in config.probes],
            }
        )
    )
    handover = IdleServer(sockets, metrics, own, signals).run()
    if handover is not None:
        # The hold's machinery, loaded by the first call that may need it.
        from lameduck_sidecar import serving  # noqa: PLC0415

        serving.run(config, handover, node)
    for sock in sockets:
        sock.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        config = load_config(os.environ)
    except ConfigError as err:
        print(f"lameduck-sidecar: {err}", file=sys.stderr)
        return 2
    run(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
