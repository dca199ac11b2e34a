"""The dashboard the chart ships (charts/lameduck/dashboards/lameduck.json) against the types
Grafana publishes (@grafana/schema, Apache-2.0), by TypeScript's compiler: each case is written as
`const dashboard: LameduckDashboard = <its JSON>` (tests/dashboard_schema/schema.ts), and one tsc
run over all of them must pass the committed dashboard and reject each broken copy of it.

The npm packages are $LAMEDUCK_DASHBOARD_SCHEMA (a directory holding their node_modules), else the
ones hack/dashboard-schema.sh installs (`make unit` runs it). Without them, or without node, the
tests skip, except under CI=true, where they fail: a skipped check must never count as a passed one."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness.tools import DASHBOARD_SCHEMA, harness_dashboard_schema_dir
from tests.unit.repo_data import REPO

COMMITTED = REPO / "charts" / "lameduck" / "dashboards" / "lameduck.json"
HINT = (
    "run `bash hack/dashboard-schema.sh` (or `make dashboard-schema`), "
    "or point LAMEDUCK_DASHBOARD_SCHEMA at the directory it prints"
)
REAL = "committed"
# tsc --pretty false: `cases/NAME.ts(LINE,COL): error TSnnnn: message`, continued on indented lines.
DIAGNOSTIC = re.compile(r"^cases/(?P<case>[\w-]+)\.ts\((?P<line>\d+),\d+\): error (?P<text>.*)$")

Dashboard = dict[str, Any]


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _installed() -> tuple[str, Path]:
    """node and the directory holding the packages' node_modules."""
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not on the PATH: the dashboard's type check runs tsc on it")
    explicit = os.environ.get("LAMEDUCK_DASHBOARD_SCHEMA")
    directory = Path(explicit) if explicit else harness_dashboard_schema_dir()
    if not (directory / "node_modules" / "typescript" / "bin" / "tsc").is_file():
        if explicit:
            pytest.fail(f"LAMEDUCK_DASHBOARD_SCHEMA={explicit} holds no node_modules/typescript/bin/tsc")
        _unavailable(f"the dashboard type check's packages are not installed at {directory}: {HINT}")
    assert node is not None
    return node, directory


# --- broken copies: each must be rejected, with its error where the change is ---------------------


def _first(dash: Dashboard, kind: str) -> Dashboard:
    found: Dashboard = next(p for p in dash["panels"] if p["type"] == kind)
    return found


def _set(path: Callable[[Dashboard], Dashboard], key: str, value: object) -> Callable[[Dashboard], None]:
    def mutate(dash: Dashboard) -> None:
        path(dash)[key] = value

    return mutate


def _drop(path: Callable[[Dashboard], Dashboard], key: str) -> Callable[[Dashboard], None]:
    def mutate(dash: Dashboard) -> None:
        del path(dash)[key]

    return mutate


def _graph(dash: Dashboard) -> Dashboard:
    return _first(dash, "timeseries")


def _table(dash: Dashboard) -> Dashboard:
    return _first(dash, "table")


def _row(dash: Dashboard) -> Dashboard:
    return _first(dash, "row")


def _target(dash: Dashboard) -> Dashboard:
    found: Dashboard = _graph(dash)["targets"][0]
    return found


def _query_variable(dash: Dashboard) -> Dashboard:
    found: Dashboard = next(v for v in dash["templating"]["list"] if v["type"] == "query")
    return found


# name: (what it breaks, the text its error must show: the key on the reported line or in the message)
BROKEN: dict[str, tuple[Callable[[Dashboard], None], str]] = {
    "gridpos-a-string": (_set(_graph, "gridPos", "x"), "gridPos"),
    "refid-a-number": (_set(_target, "refId", 3), "refId"),
    "target-key-misspelt": (_set(_target, "legendFromat", "{{pod}}"), "legendFromat"),
    "target-format-unknown": (_set(_target, "format", "graph"), "format"),
    "panels-an-object": (_set(lambda d: d, "panels", {}), "panels"),
    "schema-version-missing": (_drop(lambda d: d, "schemaVersion"), "schemaVersion"),
    "dashboard-key-unknown": (_set(lambda d: d, "styel", "dark"), "styel"),
    "graph-tooltip-out-of-range": (_set(lambda d: d, "graphTooltip", 7), "graphTooltip"),
    "field-config-without-defaults": (_set(_graph, "fieldConfig", {"overrides": []}), "defaults"),
    "field-unit-a-number": (_set(lambda d: _graph(d)["fieldConfig"]["defaults"], "unit", 5), "unit"),
    "custom-fill-a-string": (
        _set(lambda d: _graph(d)["fieldConfig"]["defaults"]["custom"], "fillOpacity", "10"),
        "fillOpacity",
    ),
    "legend-mode-unknown": (_set(lambda d: _graph(d)["options"]["legend"], "displayMode", "tabel"), "displayMode"),
    "tooltip-options-unknown-key": (_set(lambda d: _graph(d)["options"]["tooltip"], "mdoe", "multi"), "mdoe"),
    "panel-type-unchecked": (_set(_graph, "type", "stat"), "stat"),
    "table-options-null": (_set(_table, "options", None), "options"),
    "table-without-show-header": (_drop(lambda d: _table(d)["options"], "showHeader"), "showHeader"),
    "row-without-collapsed": (_drop(_row, "collapsed"), "collapsed"),
    "row-holds-a-row": (_set(_row, "panels", [{"type": "row", "collapsed": False, "id": 99, "panels": []}]), "row"),
    "variable-type-unknown": (_set(_query_variable, "type", "querry"), "querry"),
    "variable-multi-a-string": (_set(_query_variable, "multi", "true"), "multi"),
}


def _source(dashboard_json: str) -> str:
    imports = "import type { LameduckDashboard } from '../schema';\n\n"
    return f"{imports}export const dashboard: LameduckDashboard = {dashboard_json};\n"


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[str], list[str]]]:
    """Per case: tsc's errors (message and continuation lines) and its source lines; one tsc run."""
    node, installed = _installed()
    work = tmp_path_factory.mktemp("dashboard-schema")
    for name in ("schema.ts", "tsconfig.json"):
        shutil.copy(DASHBOARD_SCHEMA / name, work / name)
    (work / "node_modules").symlink_to(installed / "node_modules")
    cases = work / "cases"
    cases.mkdir()
    committed = json.loads(COMMITTED.read_text())
    (cases / f"{REAL}.ts").write_text(_source(COMMITTED.read_text().rstrip("\n")))
    for name, (mutate, _) in BROKEN.items():
        broken = copy.deepcopy(committed)
        mutate(broken)
        (cases / f"{name}.ts").write_text(_source(json.dumps(broken, indent=2)))
    done = subprocess.run(
        [node, str(installed / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 2), f"tsc failed to run ({done.returncode}): {done.stderr or done.stdout}"
    errors: dict[str, list[str]] = {case.stem: [] for case in cases.iterdir()}
    sources = {case.stem: case.read_text().splitlines() for case in cases.iterdir()}
    current: list[str] | None = None
    for line in done.stdout.splitlines():
        found = DIAGNOSTIC.match(line)
        if found:
            reported = sources[found["case"]][int(found["line"]) - 1]
            errors[found["case"]].append(f"{found['text']} [at: {reported.strip()}]")
            current = errors[found["case"]]
        elif line.startswith(" ") and current is not None:
            current[-1] += "\n" + line
        else:
            raise AssertionError(f"an error of tsc outside the cases: {line}\n{done.stdout}")
    return {name: (errors[name], sources[name]) for name in errors}


def test_the_committed_dashboard_has_grafanas_types(checked: dict[str, tuple[list[str], list[str]]]) -> None:
    errors, _ = checked[REAL]
    assert errors == [], "\n".join(errors)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_tsc_rejects_a_broken_dashboard_where_it_is_broken(
    name: str, checked: dict[str, tuple[list[str], list[str]]]
) -> None:
    errors, _ = checked[name]
    needle = BROKEN[name][1]
    assert errors, f"tsc accepted the dashboard with {name}"
    assert any(needle in error for error in errors), f"no error of {name} mentions {needle!r}: {errors}"


def test_every_panel_and_row_has_an_id_of_its_own() -> None:
    """Grafana's Panel and RowPanel: an id "must be unique within a dashboard" (no type says so)."""
    panels = json.loads(COMMITTED.read_text())["panels"]
    ids = [p.get("id") for p in panels] + [q.get("id") for p in panels for q in p.get("panels", [])]
    assert all(isinstance(i, int) and i > 0 for i in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_the_cache_is_where_hack_dashboard_schema_sh_installs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMEDUCK_CACHE", str(tmp_path))
    shell = subprocess.run(
        ["bash", str(REPO / "hack" / "dashboard-schema.sh"), "dir"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert Path(shell.stdout.strip()) == harness_dashboard_schema_dir()
    assert harness_dashboard_schema_dir().parent == tmp_path / "dashboard-schema"


def test_the_packages_are_pinned_exactly_and_apache_or_0bsd_licensed() -> None:
    lock = json.loads((DASHBOARD_SCHEMA / "package-lock.json").read_text())
    wanted = json.loads((DASHBOARD_SCHEMA / "package.json").read_text())["devDependencies"]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", version) for version in wanted.values()), wanted
    for name, version in wanted.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    licenses = {path: entry.get("license") for path, entry in lock["packages"].items() if path}
    assert set(licenses.values()) <= {"Apache-2.0", "0BSD"}, licenses
