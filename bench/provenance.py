"""What every result file records about how it was made: the commit, whether the tree had
uncommitted changes, the command, and the machine. tests/unit/test_result_files.py fails when a
file in bench/results/ lacks them."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
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
