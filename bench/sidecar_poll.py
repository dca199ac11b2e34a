"""What it costs the sidecar to poll the pod's TCP sockets while TIME_WAIT piles up.

In a network namespace of its own (unshare --net; only its loopback), a server on
127.0.0.1:80 closes each connection first, so every one leaves a TIME_WAIT socket on the
server side for 60 s, while a client bound to 127.0.0.1 opens --rate connections a second.
Every --interval the poller times, one after the other:

  proc          /proc/net/tcp and tcp6 read and parsed by lameduck_sidecar.tcp.parse
  sockdiag      the sum of the next two, what the sidecar would do instead:
    live          sock_diag: every state but TIME_WAIT, with tcp_info
    tw_filtered   sock_diag: the TIME_WAIT sockets of remote 127.0.0.2 only (a filter the
                  kernel runs, which here excludes them all)
  unfiltered    sock_diag: every TIME_WAIT socket, parsed
  kernel_only   the same dump received but not parsed: the kernel's and recv's share of it
  sidecar       one whole poll of the hold: lameduck_sidecar.tcp.KernelView.snapshot()
                (the accept counter, the two sock_diag dumps above) and
                lameduck_sidecar.traffic.TrafficCounter.observe(), with the node at 127.0.0.2

Prints per time window the TIME_WAIT count and each method's median/p99/max milliseconds,
the poller's peak RSS, and writes JSON to bench/results/sidecar_poll.json.

    python -m bench.sidecar_poll [--seconds 60] [--rate 1000] [--interval 0.1]

Needs root (or user namespaces: then it maps itself to root) and unshare(1), ip(8).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from bench.provenance import write_result
from lameduck_sidecar import sockdiag, tcp
from lameduck_sidecar.traffic import Probe, TrafficCounter

REPO = Path(__file__).resolve().parent.parent
SERVER = ("127.0.0.1", 80)
# The client binds its ports itself, in turn: each 4-tuple then comes back only after
# 64,000 connections, longer than TIME_WAIT lasts, so none is recycled early.
CLIENT_PORTS = range(1024, 65536)
NOT_THE_CLIENT = IPv4Address("127.0.0.2")
TIMED = ("proc", "live", "tw_filtered", "unfiltered", "kernel_only", "sidecar")
METHODS = ("proc", "sockdiag", "live", "tw_filtered", "unfiltered", "kernel_only", "sidecar")  # as reported


def poll_proc() -> int:
    return sum(len(tcp.parse(Path(f"/proc/net/{name}").read_text())) for name in ("tcp", "tcp6"))


def poll_live() -> int:
    return len(sockdiag.dump(sockdiag.ALL_STATES & ~sockdiag.mask(sockdiag.TIME_WAIT), with_info=True))


def poll_tw_filtered() -> int:
    return len(sockdiag.dump(sockdiag.mask(sockdiag.TIME_WAIT), with_info=False, remote_addresses={NOT_THE_CLIENT}))


def poll_unfiltered() -> int:
    return len(sockdiag.dump(sockdiag.mask(sockdiag.TIME_WAIT), with_info=False))


def poll_kernel_only() -> int:
    """The unfiltered TIME_WAIT dump, received whole but not parsed; returns bytes received."""
    total = 0
    buffer = bytearray(sockdiag.RECEIVE_BUFFER)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, sockdiag.NETLINK_SOCK_DIAG) as netlink:
        for family in (socket.AF_INET, socket.AF_INET6):
            netlink.sendto(sockdiag.build_request(family, sockdiag.mask(sockdiag.TIME_WAIT), with_info=False), (0, 0))
            while True:
                received = netlink.recv_into(buffer)
                total += received
                # NLMSG_DONE, 20 bytes, ends the dump's last datagram; the kernel sends it alone
                # when the sockets filled the one before, so look at the tail only
                length, kind = struct.unpack_from("=IH", buffer, received - 20) if received >= 20 else (0, 0)
                if (length, kind) == (20, sockdiag.NLMSG_DONE):
                    break
    return total


SIDECAR_PORT = 9901
VIEW = tcp.KernelView(SIDECAR_PORT, lambda: 0, {NOT_THE_CLIENT})
COUNTER = TrafficCounter(
    frozenset({SERVER[1]}), SIDECAR_PORT, (Probe(SERVER[1], 1.0),), frozenset({NOT_THE_CLIENT}), quiet_period=1.0
)


def poll_sidecar() -> int:
    """The hold's poll as the sidecar runs it; returns the new connections it told."""
    return COUNTER.observe(time.monotonic(), VIEW.snapshot())[0]


POLLS: dict[str, Callable[[], int]] = {
    "proc": poll_proc,
    "live": poll_live,
    "tw_filtered": poll_tw_filtered,
    "unfiltered": poll_unfiltered,
    "kernel_only": poll_kernel_only,
    "sidecar": poll_sidecar,
}


# ---- load: its own process, so its work does not queue behind the poller's GIL ------------


def serve(listener: socket.socket, stop: threading.Event) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:  # closed here, before the client: the TIME_WAIT stays on this side
            conn.recv(64)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")


def load(seconds: float, rate: float) -> dict[str, object]:
    listener = socket.create_server(SERVER, backlog=1024)
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(listener, stop), daemon=True)
    server.start()
    done = failed = 0
    start = time.monotonic()
    for i in range(int(seconds * rate)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            with socket.socket() as client:
                client.bind(("127.0.0.1", CLIENT_PORTS[i % len(CLIENT_PORTS)]))
                client.connect(SERVER)
                client.sendall(b"GET / HTTP/1.0\r\n\r\n")
                while client.recv(64):  # until the server's FIN
                    pass
            done += 1
        except OSError:
            failed += 1
    elapsed = time.monotonic() - start
    stop.set()
    server.join()
    listener.close()
    return {"connections": done, "failed": failed, "seconds": round(elapsed, 2), "rate": round(done / elapsed, 1)}


# ---- polling ----------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def poll(seconds: float, interval: float) -> list[dict[str, float]]:
    """One round every interval, or back to back once a round takes longer than that."""
    rounds: list[dict[str, float]] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        row = {"t": round(elapsed, 3)}
        for name in TIMED:
            began = time.perf_counter()
            found = POLLS[name]()
            row[name] = (time.perf_counter() - began) * 1000
            if name == "unfiltered":
                row["time_wait"] = found
            if name == "sidecar":
                row["sidecar_told"] = found
        row["sockdiag"] = row["live"] + row["tw_filtered"]
        rounds.append(row)
        time.sleep(max(0.0, start + elapsed + interval - time.monotonic()))
    return rounds


def allocation_peaks() -> dict[str, float]:
    """Peak Python allocation of one call of each method, KiB (traced: slower, so apart)."""
    peaks: dict[str, float] = {}
    tracemalloc.start()
    for name in TIMED:
        tracemalloc.reset_peak()
        POLLS[name]()
        peaks[name] = round(tracemalloc.get_traced_memory()[1] / 1024)
    tracemalloc.stop()
    return peaks


def windows(rounds: list[dict[str, float]], width: float) -> list[dict[str, object]]:
    found = []
    for first in range(0, math.ceil(rounds[-1]["t"] / width + 1e-9)):
        rows = [r for r in rounds if first * width <= r["t"] < (first + 1) * width]
        if rows:
            window: dict[str, object] = {
                "from_s": round(first * width, 1),
                "to_s": round((first + 1) * width, 1),
                "polls": len(rows),
                "time_wait": int(max(r["time_wait"] for r in rows)),
            }
            window.update({name: summary([r[name] for r in rows]) for name in METHODS})
            found.append(window)
    return found


def table(found: list[dict[str, object]]) -> str:
    head = f"{'window s':>9} {'polls':>5} {'TIME_WAIT':>9}" + "".join(f" {m:>18}" for m in METHODS)
    lines = [head, f"{'':>25}" + f" {'ms med/p99/max':>18}" * len(METHODS)]
    for w in found:
        cells = []
        for name in METHODS:
            s = w[name]
            assert isinstance(s, dict)
            cells.append(f" {s['median']:>6.1f}/{s['p99']:>5.0f}/{s['max']:>5.0f}")
        lines.append(f"{w['from_s']:>4}-{w['to_s']:<4} {w['polls']:>5} {w['time_wait']:>9}" + "".join(cells))
    return "\n".join(lines)


def in_namespace(args: argparse.Namespace) -> int:
    """The benchmark proper, run in the new network namespace."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    load_before = os.getloadavg()
    command = [sys.executable, "-m", "bench.sidecar_poll", "--role", "load", "--seconds", str(args.seconds)]
    loader = subprocess.Popen([*command, "--rate", str(args.rate)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # the server listening before the first poll
        rounds = poll(args.seconds, args.interval)
        out, _ = loader.communicate(timeout=60)
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait()
    peaks = allocation_peaks()
    found = windows(rounds, args.window or max(1.0, args.seconds / 6))
    result = {
        "command": " ".join(["python -m bench.sidecar_poll", *args.argv]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # the machine may be shared: its load average (1, 5, 15 min) before and after
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "settings": {"seconds": args.seconds, "rate": args.rate, "interval": args.interval},
        "load": json.loads(out),
        "methods": {
            "proc": "/proc/net/tcp + tcp6 read and lameduck_sidecar.tcp.parse",
            "sockdiag": "live + tw_filtered",
            "live": "dump(all states but TIME_WAIT, with_info=True)",
            "tw_filtered": "dump(TIME_WAIT, remote_addresses={127.0.0.2}), the client being 127.0.0.1",
            "unfiltered": "dump(TIME_WAIT), every socket parsed",
            "kernel_only": "the unfiltered TIME_WAIT dump received but not parsed",
            "sidecar": "KernelView.snapshot() + TrafficCounter.observe(), the hold's whole poll",
        },
        # Every client connection is new work (none comes from the node): the poll must tell them all.
        "sidecar_told_connections": sum(int(r.get("sidecar_told", 0)) for r in rounds),
        "sidecar_counter_entries_at_end": len(COUNTER._bytes),
        "windows": found,
        "overall": {name: summary([r[name] for r in rounds]) for name in METHODS},
        "late_polls": sum(1 for a, b in itertools.pairwise(rounds) if b["t"] - a["t"] > args.interval * 1.5),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "allocation_peak_per_call_kib_at_end": peaks,
    }
    print(table(found))
    print(f"the sidecar's poll told {result['sidecar_told_connections']} new connections")
    print(f"load: {result['load']}   poller peak RSS: {result['peak_rss_mib']} MiB   allocation peaks: {peaks} KiB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result(Path(args.out), result)
    print(f"wrote {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="new connections a second")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between polls")
    parser.add_argument("--window", type=float, default=0.0, help="report window, s (default: a sixth of the run)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "sidecar_poll.json"))
    parser.add_argument("--role", choices=("outer", "inner", "load"), default="outer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "load":
        print(json.dumps(load(args.seconds, args.rate)))
        return 0
    if args.role == "inner":
        args.argv = [a for a in sys.argv[1:] if a not in ("--role", "inner")]
        return in_namespace(args)
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "--map-root-user"]
    inner = [sys.executable, "-m", "bench.sidecar_poll", *sys.argv[1:], "--role", "inner"]
    return subprocess.run([*unshare, "--", *inner], cwd=REPO, check=False, timeout=args.seconds + 300).returncode


if __name__ == "__main__":
    raise SystemExit(main())
