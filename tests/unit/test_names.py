"""Names are defined once per side: in lameduck_operator.names and lameduck_sidecar.names.

A module-level constant whose value is one of those names, written out as a literal in some
other module, is a second definition that can drift from the first; so is the same constant
name given a literal value in two modules of one side.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import pytest

from lameduck_operator import names as operator_names
from lameduck_sidecar import names as sidecar_names

REPO = Path(__file__).resolve().parents[2]
SIDES = {
    "operator": (REPO / "operator" / "lameduck_operator", operator_names),
    "sidecar": (REPO / "sidecar" / "lameduck_sidecar", sidecar_names),
}
# Values too generic to own: the product's name is also a container name, a field manager, a
# Grafana tag and the CLI's name, each a different thing that happens to be spelled alike; and
# "version", a key of the hold report, of the learned ConfigMap's values and of many other things.
GENERIC = {"lameduck", "hold", "v1alpha1", "version"}
# The operator's own pod name comes from the chart's downward API under the same variable name
# the operator gives the sidecar's: two variables in two containers, spelled alike on purpose.
ALIKE = {("config.py", "LAMEDUCK_POD_NAME")}


def contract_values(module: ModuleType) -> set[str]:
    found: set[str] = set()
    for name, value in vars(module).items():
        if not name.isupper() and not isinstance(value, type):
            continue
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, type):
            found |= {v for k, v in vars(value).items() if k.isupper() and isinstance(v, str)}
        elif isinstance(value, dict):
            found |= {v for v in [*value.keys(), *value.values()] if isinstance(v, str)}
        elif isinstance(value, tuple):
            found |= {v for v in value if isinstance(v, str)}
    return found - GENERIC


def string_literals(tree: ast.Module) -> set[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


def modules(package: Path) -> dict[str, ast.Module]:
    return {str(p.relative_to(package)): ast.parse(p.read_text()) for p in sorted(package.rglob("*.py"))}


@pytest.mark.parametrize("side", SIDES)
def test_no_module_writes_a_contract_name_as_a_literal(side: str) -> None:
    package, names = SIDES[side]
    values = contract_values(names)
    assert values, "the names module defines the contract"
    found = {
        (path, value)
        for path, tree in modules(package).items()
        if path != "names.py"
        for value in string_literals(tree) & values
    } - ALIKE
    assert not found, f"import these from {names.__name__} instead: {sorted(found)}"


@pytest.mark.parametrize("side", SIDES)
def test_no_constant_name_is_given_a_literal_in_two_modules(side: str) -> None:
    package, _ = SIDES[side]
    defined: defaultdict[str, list[str]] = defaultdict(list)
    for path, tree in modules(package).items():
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id.isupper():
                        defined[target.id].append(path)
    twice = {name: paths for name, paths in defined.items() if len(paths) > 1}
    assert not twice, f"one name, one place: {twice}"
