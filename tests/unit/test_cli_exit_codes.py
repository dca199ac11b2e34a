"""The CLI on input that is hostile, careless or broken: each failure one line on stderr, starting
"lameduck", with the exit code docs/policy.md documents, and never a traceback. Each refusal of input
is also checked by its typed problem, where manifest_input reads it."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from lameduck_operator import cli, manifest_input
from lameduck_operator.cli import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL_ERROR,
    EXIT_INVALID_OBJECTS,
    EXIT_NOT_COMPLIANT,
    EXIT_OK,
    main,
)
from lameduck_operator.manifest_input import MAX_DEPTH, InputError, Problem, objects
from tests.unit.builders import deployment
from tests.unit.repo_data import EXAMPLES

POLICY = "apiVersion: lameduck.dev/v1alpha1\nkind: GracefulPolicy\nmetadata: {name: p, namespace: shop}\n"
# Nine levels of nine aliases each: 9**9 (387 million) nodes once expanded, from 600 bytes.
LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def run(*args: str, stdin: io.TextIOBase | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), stdin=stdin or io.StringIO(""), out=out)  # type: ignore[arg-type]
    return code, out.getvalue()


def one_line(err: str) -> str:
    """The single line a failure prints; fails on more, or on a traceback."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lameduck"), err
    return lines[0]


def problem_of(path: Path | str, stdin: io.TextIOBase | None = None) -> Problem:
    with pytest.raises(InputError) as raised:
        list(objects([str(path)], stdin or io.StringIO("")))  # type: ignore[arg-type]
    return raised.value.problem


def nested(depth: int) -> str:
    """A Namespace whose labels' sibling field nests `depth` levels in all (flow style)."""
    return "kind: Namespace\nmetadata: {name: a}\nx: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"


def block_nested(depth: int) -> str:
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"


UNREADABLE_INPUT: list[tuple[str, bytes, Problem]] = [
    ("malformed", b"a: [", Problem.NOT_YAML),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", Problem.NOT_YAML),
    ("not-utf-8", b"kind: Namespace\nmetadata: {name: \xe9t\xe9}\n", Problem.NOT_YAML),
    ("control-character", b"kind: Namespace\nmetadata: {name: a\x07}\n", Problem.NOT_YAML),
    ("billion-laughs", LAUGHS.encode(), Problem.TOO_MANY_NODES),
    ("recursive-alias", b"kind: Namespace\nmetadata: {name: a}\nx: &x [*x]\n", Problem.RECURSIVE_ALIAS),
    ("recursive-alias-in-a-map", b"a: &a {b: *a}\n", Problem.RECURSIVE_ALIAS),
    ("too-deep", nested(MAX_DEPTH + 1).encode(), Problem.TOO_DEEP),
    ("too-deep-block", block_nested(MAX_DEPTH + 1).encode(), Problem.TOO_DEEP),
    (
        "alias-makes-it-too-deep",
        b"a: &a " + b"[" * 60 + b"]" * 60 + b"\nb: " + b"[" * 60 + b"*a" + b"]" * 60,
        Problem.TOO_DEEP,
    ),
    ("duplicate-key", b"kind: Namespace\nkind: Deployment\nmetadata: {name: a}\n", Problem.DUPLICATE_KEY),
    (
        "duplicate-label",
        b"kind: Deployment\nmetadata:\n  name: web\n  labels:\n    app: x\n    tier: y\n    app: z\n",
        Problem.DUPLICATE_KEY,
    ),
    ("duplicate-key-in-json", b'{"kind": "Namespace", "kind": "Deployment"}', Problem.DUPLICATE_KEY),
    ("sequence-document", b"- 1\n- 2\n", Problem.NOT_AN_OBJECT),
    ("scalar-in-a-multi-document-file", POLICY.encode() + b"---\n42\n", Problem.NOT_AN_OBJECT),
    ("list-whose-items-are-no-list", b"kind: List\nitems: {a: 1}\n", Problem.NOT_AN_OBJECT),
    ("list-item-no-object", b"kind: DeploymentList\nitems: [1]\n", Problem.NOT_AN_OBJECT),
]


@pytest.mark.parametrize(
    ("content", "problem"), [c[1:] for c in UNREADABLE_INPUT], ids=[c[0] for c in UNREADABLE_INPUT]
)
def test_input_that_cannot_be_read_as_manifests_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: Problem
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    assert problem_of(bad) is problem
    assert run("check", "-f", str(bad)) == (EXIT_BAD_INPUT, "")
    assert str(bad) in one_line(capsys.readouterr().err)


def test_nesting_past_what_libyaml_parses_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "deep.yaml"
    bad.write_text(nested(100_000))
    assert problem_of(bad) in (Problem.NOT_YAML, Problem.TOO_DEEP)  # libyaml stops at 1000 levels
    assert run("render", "-f", str(bad)) == (EXIT_BAD_INPUT, "")
    one_line(capsys.readouterr().err)


def test_the_loader_is_libyamls_when_pyyaml_has_it() -> None:
    assert manifest_input.WITH_LIBYAML is bool(yaml.__with_libyaml__)
    if yaml.__with_libyaml__:
        assert issubclass(manifest_input.BoundedLoader, yaml.CSafeLoader)
    assert issubclass(manifest_input.BoundedLoader, yaml.constructor.SafeConstructor)


def test_within_the_bounds_everything_loads(tmp_path: Path) -> None:
    """Nesting at the bound, aliases that stay small, and a merge key that overrides (no duplicate)."""
    fine = tmp_path / "fine.yaml"
    fine.write_text(
        nested(MAX_DEPTH)
        + "---\n"
        + "kind: Namespace\nmetadata: {name: b}\ndefaults: &d {x: 1, y: 2}\nuse: {<<: *d, x: 3}\nagain: [*d, *d]\n"
    )
    found = [obj for _, obj in objects([str(fine)], io.StringIO(""))]
    assert found[1]["use"] == {"x": 3, "y": 2}
    assert run("check", "-f", str(fine)) == (EXIT_OK, "0 deployments, 0 without work, 0 pending or conflicting\n")


def test_a_deployment_at_the_depth_bound_is_rendered(tmp_path: Path) -> None:
    """The CLI's own work (copy, merge, dump) recurses a few frames a level: at MAX_DEPTH it must not overflow."""
    deep: Any = "leaf"
    for _ in range(MAX_DEPTH - 7):  # levels: 6 down to the container, 93 lists, the leaf
        deep = [deep]
    manifest = deployment()
    manifest["spec"]["template"]["spec"]["containers"][0]["x-deep"] = deep
    file = tmp_path / "d.yaml"
    file.write_text(yaml.safe_dump_all([yaml.safe_load(POLICY), manifest]))
    code, out = run("render", "--diff", "-f", str(file))
    assert code == EXIT_OK
    assert "+++ shop/web (with lameduck)" in out


def test_a_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert problem_of("/nonexistent/policy.yaml") is Problem.NOT_FOUND
    assert run("check", "-f", "/nonexistent/policy.yaml") == (EXIT_BAD_INPUT, "")
    one_line(capsys.readouterr().err)


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc")
def test_a_file_whose_read_fails_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert problem_of("/proc/self/mem") is Problem.UNREADABLE  # reading its first page fails: EIO
    assert run("check", "-f", "/proc/self/mem") == (EXIT_BAD_INPUT, "")
    one_line(capsys.readouterr().err)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_file_is_read_only_up_to_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    assert problem_of("/dev/zero") is Problem.TOO_LARGE
    assert run("check", "-f", "/dev/zero") == (EXIT_BAD_INPUT, "")
    one_line(capsys.readouterr().err)


def test_a_directory_reads_its_manifest_files_only(tmp_path: Path) -> None:
    (tmp_path / "not-a-file.yaml").mkdir()
    (tmp_path / "notes.txt").write_text("a: [")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ns.yml").write_text("kind: Namespace\nmetadata: {name: a}\n")
    assert [obj["kind"] for _, obj in objects([str(tmp_path)], io.StringIO(""))] == ["Namespace"]
    assert run("check", "-f", str(tmp_path))[0] == EXIT_OK


def test_binary_garbage_on_stdin_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\xfd\x00garbage"), encoding="utf-8")
    assert problem_of("-", stdin) is Problem.NOT_YAML
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe\xfd\x00garbage"), encoding="utf-8")
    assert run("check", "-f", "-", stdin=stdin) == (EXIT_BAD_INPUT, "")
    one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["check"],
        ["check", "-f", "x", "--bogus"],
        ["check", "-f", "x", "-o", "xml"],
        ["check", "-f", "x", "-n", "Not_A_Namespace"],
        ["check", "-f", "x", "-n", "a\nb"],
        ["apply", "-f", "x"],
    ],
    ids=[
        "nothing",
        "no-file",
        "unknown-flag",
        "unknown-output",
        "bad-namespace",
        "namespace-with-newline",
        "no-such-command",
    ],
)
def test_a_usage_error_exits_2_in_one_line(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    assert run(*args) == (EXIT_BAD_INPUT, "")
    one_line(capsys.readouterr().err)


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--version")[0] == EXIT_OK
    assert run("--help")[0] == EXIT_OK
    assert "exit codes" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("manifest", "path"),
    [
        ({"spec": {"template": {"spec": {"containers": "app"}}}}, "spec.template.spec.containers"),
        ({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, "spec.template.spec.containers[0].name"),
        ({"spec": {"template": {"spec": {"containers": [None]}}}}, "spec.template.spec.containers[0]"),
        ({"metadata": {"name": "web", "labels": {"app": ["web"]}}}, "metadata.labels.app"),
        (
            {"metadata": {"name": "web", "annotations": {"lameduck.dev/skip": True}}},
            "metadata.annotations.lameduck.dev/skip",
        ),
        (
            {"metadata": {"name": "web", "managedFields": [{"fieldsV1": {"f:spec": 1}}]}},
            "metadata.managedFields[0].fieldsV1",
        ),
        ({"metadata": {"name": "web\nmore"}}, "metadata.name"),
        ({"metadata": {"name": "web", "namespace": "Shop"}}, "metadata.namespace"),
        ({"metadata": "web"}, "metadata"),
        ({"metadata": {}}, "metadata.name"),
        ({"status": {"conditions": [{"type": 1}]}}, "status.conditions[0].type"),
    ],
)
def test_a_deployment_of_wrong_types_exits_3_one_line_per_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: dict[str, Any], path: str
) -> None:
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, **manifest}
    file = tmp_path / "d.yaml"
    file.write_text(POLICY + "---\n" + yaml.safe_dump(body))
    assert run("check", "-f", str(file)) == (EXIT_INVALID_OBJECTS, "")
    line = one_line(capsys.readouterr().err)
    assert f": {path}: " in line


def test_invalid_objects_are_reported_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "all.yaml"
    file.write_text(
        POLICY.replace("{name: p,", "{name: q,") + "spec: {mode: x, hold: {maxHold: 1h}}\n---\n"
        "kind: Namespace\nmetadata: {name: shop, labels: {team: 1}}\n"
    )
    assert run("render", "-f", str(file)) == (EXIT_INVALID_OBJECTS, "")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[3] for line in lines] == ["spec.hold.maxHold", "spec.mode", "metadata.labels.team"]
    assert all(line.startswith(f"lameduck: {file}: ") for line in lines)


def test_every_example_deployment_has_the_shape_the_api_server_guarantees() -> None:
    """No false alarm: the shapes must take every real manifest."""
    code, _ = run("check", "-f", str(EXAMPLES / "deployments"))
    assert code in (EXIT_OK, EXIT_NOT_COMPLIANT)


def test_an_internal_error_exits_4_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(cli, "decide", broken)
    args = ["check", "-f", str(EXAMPLES / "policies"), "-f", str(EXAMPLES / "deployments")]
    assert run(*args) == (EXIT_INTERNAL_ERROR, "")
    assert "RuntimeError: a bug over two lines" in one_line(capsys.readouterr().err)
    with pytest.raises(RuntimeError):
        run("--traceback", *args)


class ClosedOutput(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_output_closed_early_exits_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["render", "-f", str(EXAMPLES / "policies"), "-f", str(EXAMPLES / "deployments")], out=ClosedOutput())
    assert code == EXIT_BAD_INPUT
    one_line(capsys.readouterr().err)
