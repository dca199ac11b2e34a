"""No class in the product is over MAX_CLASS_LINES: one that grows past it is doing more than one job
and is split by job (as Fleet was into the reconcile queue, rollout slots, writes, events,
status and the sidecar's access)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (REPO / "operator" / "lameduck_operator", REPO / "sidecar" / "lameduck_sidecar")
MAX_CLASS_LINES = 200


def class_spans(source: str) -> list[tuple[str, int]]:
    """Each class (nested ones too) with the lines it spans, from `class` (or its first
    decorator) to its last line."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((node.name, node.end_lineno - first + 1))
    return spans


def test_class_spans_count_every_line_of_a_class() -> None:
    source = "@decorated\nclass A:\n    x = 1\n\n    class B:\n        y = 2\n"
    assert sorted(class_spans(source)) == [("A", 6), ("B", 2)]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_no_class_is_over_the_limit(package: Path) -> None:
    over = {
        f"{path.relative_to(REPO)}:{name}": lines
        for path in sorted(package.rglob("*.py"))
        for name, lines in class_spans(path.read_text())
        if lines > MAX_CLASS_LINES
    }
    assert not over, f"classes over {MAX_CLASS_LINES} lines: split them by job"
