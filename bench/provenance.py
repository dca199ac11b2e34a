"""What every result file records about how it was made: the commit, whether the tree had
uncommitted changes, the command, and the machine (tests/unit/test_result_files.py fails when a
file in bench/results/ lacks them); and, for benchmarks that import the operator, which
checkout's operator was measured.

The operator measured is the one imported, so PYTHONPATH=<another checkout>/operator measures
another commit; `operator_source` then names that checkout's commit, not this one's.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def operator_source() -> dict[str, str]:
    import lameduck_operator  # noqa: PLC0415 (only the benchmarks that measure the operator need it)

    where = Path(lameduck_operator.__file__).parent
    return {
        "path": str(where),
        "commit": _git("rev-parse", "HEAD", cwd=where),
        "changed_files": _git("status", "--porcelain", ".", cwd=where),
    }


def machine() -> dict[str, Any]:
    """CPU, memory and load: the machine may be shared, so its load average is part of the result."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0] if Path("/proc/meminfo").exists() else ""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory": meminfo.split(":", 1)[-1].strip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }


def command(argv: list[str] | None = None) -> str:
    """The command as typed: `python -m bench.x ...` for a module run, else the argv itself."""
    args = list(sys.argv if argv is None else argv)
    if args and args[0].endswith(".py") and "bench" in Path(args[0]).parts:
        module = ".".join(Path(args[0]).with_suffix("").parts[-2:])
        return shlex.join(["python", "-m", module, *args[1:]])
    return shlex.join(args)


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "command": command(argv),
        "machine": machine(),
    }


def write_result(path: Path, result: dict[str, Any], indent: int = 2) -> None:
    """Write a result file with its provenance: what the result says of itself (a command as the
    benchmark spells it) first, the rest filled in here."""
    known = provenance()
    filled = {key: result.get(key) or known[key] for key in known} | {k: v for k, v in result.items() if k not in known}
    path.write_text(json.dumps(filled, indent=indent) + "\n")
