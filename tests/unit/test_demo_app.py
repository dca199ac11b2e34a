"""The demo app catches SIGTERM from its first moments. As PID 1 in its container it gets no
default SIGTERM action, so a signal that arrived before its handler (a pod deleted while it was
starting) used to be lost, and the pod ran until SIGKILL at the end of its grace period."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "examples" / "demo-app" / "server.py"
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & SIGTERM_BIT)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_demo_app_handles_sigterm_before_it_listens_and_exits_on_an_early_one() -> None:
    env = {**os.environ, "PORT": str(free_port()), "CLOSE_NOTICE_SECONDS": "0", "DRAIN_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, str(SERVER)], env=env, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        listening_when_caught = any("listening" in line for line in lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "an early SIGTERM ends the app cleanly"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    assert not listening_when_caught, "SIGTERM is caught before the app starts listening"
