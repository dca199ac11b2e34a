"""The sidecar's image installs lameduck_sidecar and the `sidecar` extra of pyproject.toml: the extra
is exactly what the sidecar imports from outside the standard library, the distribution's own
dependencies include it, and the Dockerfile's sidecar stage installs it, without the rest."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.unit.repo_data import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRA = PROJECT["optional-dependencies"]["sidecar"]


def distribution(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def third_party_imports() -> set[str]:
    """The top-level modules lameduck_sidecar imports that are neither its own nor the standard library's."""
    found = set()
    for path in (REPO / "sidecar" / "lameduck_sidecar").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"lameduck_sidecar", "__future__"}


def test_the_sidecar_extra_is_what_the_sidecar_imports() -> None:
    providers = importlib.metadata.packages_distributions()
    imported = {providers[module][0].lower() for module in third_party_imports()}
    assert imported == {distribution(r) for r in EXTRA}
    assert imported == {"h11"}, "one library; a new one is added to the extra and to docs/sidecar.md#memory"


def test_the_distribution_depends_on_the_sidecar_extra() -> None:
    assert set(EXTRA) <= set(PROJECT["dependencies"]), "a development install has what the sidecar imports"


def test_the_sidecar_stage_installs_the_package_alone_and_the_lock_of_the_extra() -> None:
    """The lock of the extra is checked against the extra by tests/unit/test_locks.py."""
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", "")
    stage = dockerfile.split("FROM build AS sidecar-build", 1)[1].split("\nFROM ", 1)[0]
    copies = [line.split()[1] for line in stage.splitlines() if line.startswith("COPY ")]
    assert copies == ["requirements", "sidecar"], "operator/ stays out of the sidecar's wheel"
    runs = [line for line in stage.splitlines() if line.startswith("RUN ")]
    installs = [i.split() for run in runs for i in re.findall(r"pip install [^&]*", run)]
    assert [i[i.index("-r") + 1 :: 2] for i in installs[:1]] == [
        ["/src/requirements/build.txt", "/src/requirements/sidecar.txt"]
    ]
    assert "--no-deps" in installs[1]
    assert installs[1][-1] == "/src"
