"""Every result file says how it was made: the commit (an ancestor of HEAD, so anyone can check
out the code measured), the command and the machine. Docs quote figures from these files only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = sorted((REPO / "bench" / "results").glob("*.json"))


def recorded(data: dict[str, Any]) -> dict[str, Any]:
    """Top-level fields, or those the rollout benchmark keeps under `environment`."""
    environment = data.get("environment")
    return {**(environment if isinstance(environment, dict) else {}), **data}


def test_there_are_result_files() -> None:
    assert len(RESULTS) > 10


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_a_result_file_records_commit_command_and_machine(path: Path) -> None:
    data = json.loads(path.read_text())
    assert isinstance(data, dict), "a result file is one JSON object"
    fields = recorded(data)
    missing = [key for key in ("commit", "command", "machine") if not fields.get(key)]
    assert not missing, f"{path.name} does not record {missing}"
    commit = str(fields["commit"])
    assert len(commit) == 40, f"a full commit id, got {commit!r}"
    assert set(commit) <= set("0123456789abcdef"), f"a full commit id, got {commit!r}"
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=REPO, check=False)
    assert ancestor.returncode == 0, f"{path.name}: commit {commit} is not an ancestor of HEAD"
