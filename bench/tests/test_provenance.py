"""A result file written through write_result carries its provenance, the benchmark's own
command kept over the generic one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.provenance import REPO, command, write_result


def test_a_result_is_written_with_commit_command_and_machine(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    write_result(out, {"command": "python -m bench.x --runs 3", "rows": [1, 2]})
    written = json.loads(out.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    assert written["commit"] == head.stdout.strip()
    assert written["command"] == "python -m bench.x --runs 3"
    assert written["machine"]["cpus"] >= 1
    assert written["rows"] == [1, 2]


def test_a_command_without_its_own_spelling_is_the_module_run() -> None:
    assert command(["/repo/bench/sidecar_poll.py", "--seconds", "5"]) == "python -m bench.sidecar_poll --seconds 5"
    assert command(["kubectl", "get", "pods"]) == "kubectl get pods"
