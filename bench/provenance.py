"""Where a result file came from: the commit of the operator measured, and the machine.

The operator measured is the one imported, so PYTHONPATH=<another checkout>/operator measures
another commit; the result then names that checkout's commit, not this one's.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import lameduck_operator


def operator_source() -> dict[str, str]:
    where = Path(lameduck_operator.__file__).parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=where)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "."], capture_output=True, text=True, check=False, cwd=where
    )
    return {"path": str(where), "commit": commit.stdout.strip(), "changed_files": dirty.stdout.strip()}


def machine() -> dict[str, Any]:
    """CPU, memory and load: the machine may be shared, so its load average is part of the result."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0] if Path("/proc/meminfo").exists() else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": meminfo.split(":", 1)[-1].strip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }
