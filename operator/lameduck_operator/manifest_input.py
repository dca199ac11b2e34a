"""The CLI's input: manifests from files, directories and stdin, read within bounds, so that hostile
or careless input is an InputError with a typed problem, never a hang, a traceback or a crash.

YAML is read by PyYAML's C loader (libyaml) when it is there, its pure-Python one otherwise:
safe loaders both (plain data, never Python objects). Before a document is built its nodes are
checked: at most MAX_DEPTH deep and MAX_NODES nodes with every alias expanded (a "billion laughs"
file is refused, never expanded), no alias inside what it names. A mapping that names a key twice
is refused, as kubectl refuses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
# Far above any manifest (the API server takes at most 3 MiB a request); /dev/zero ends here.
MAX_INPUT_BYTES = 32 * 1024 * 1024
# A Deployment nests about 12 deep; the CLI's own work recurses a few frames per level.
MAX_DEPTH = 100
# Nodes of one document, aliases expanded: a 3 MiB object holds at most about 1.5 million.
MAX_NODES = 1_000_000
WITH_LIBYAML = _SafeLoader.__name__ == "CSafeLoader"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Problem(StrEnum):
    """Why input could not be used."""

    NOT_FOUND = "NotFound"
    UNREADABLE = "Unreadable"  # a read failed: permissions, a directory named .yaml, ...
    TOO_LARGE = "TooLarge"  # more than MAX_INPUT_BYTES
    NOT_YAML = "NotYAML"  # not UTF-8/16 YAML or JSON, or beyond what libyaml parses (1000 levels deep)
    TOO_DEEP = "TooDeep"  # more than MAX_DEPTH levels
    TOO_MANY_NODES = "TooManyNodes"  # more than MAX_NODES nodes once aliases are expanded
    RECURSIVE_ALIAS = "RecursiveAlias"
    DUPLICATE_KEY = "DuplicateKey"
    NOT_AN_OBJECT = "NotAnObject"  # a document, list item or field that is not what Kubernetes takes


class InputError(Exception):
    """Input the CLI cannot use: one line naming the source, and why."""

    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


class _Refused(yaml.YAMLError):
    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def check_shape(root: Node) -> None:
    """Refuse a document too deep, too large once its aliases are expanded, or recursive. Linear
    in the distinct nodes: each is measured once, however many aliases name it."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, measured = stack.pop()
        key = id(node)
        if measured:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            on_path.discard(key)
            if depth[key] > MAX_DEPTH:
                raise _Refused(Problem.TOO_DEEP, f"nested more than {MAX_DEPTH} levels deep")
            if size[key] > MAX_NODES:
                raise _Refused(Problem.TOO_MANY_NODES, f"more than {MAX_NODES} nodes with its aliases expanded")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused(Problem.RECURSIVE_ALIAS, "an alias refers to a node that contains it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


class BoundedLoader(_SafeLoader):
    """The safe loader, refusing documents check_shape refuses and mappings with a key twice."""

    def construct_document(self, node: Node) -> Any:
        check_shape(node)
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *defaults` overrides by design
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class refuses it
            if duplicate:
                line = key_node.start_mark.line + 1
                raise _Refused(Problem.DUPLICATE_KEY, f"line {line}: the key {_shown(key)} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_documents(name: str, data: bytes | str) -> list[Any]:
    """The documents of one YAML or JSON stream; empty documents left out."""
    try:
        return [doc for doc in yaml.load_all(data, Loader=BoundedLoader) if doc is not None]
    except _Refused as err:
        raise InputError(err.problem, f"{name}: {err}") from None
    except yaml.YAMLError as err:
        raise InputError(Problem.NOT_YAML, f"{name}: not valid YAML: {_one_line(str(err))}") from None
    except RecursionError:  # the pure-Python loader composes recursively
        raise InputError(Problem.TOO_DEEP, f"{name}: nested more than {MAX_DEPTH} levels deep") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _read(path: Path) -> bytes | str:
    try:
        with path.open("rb") as file:
            return _bounded(str(path), file)
    except OSError as err:
        raise InputError(Problem.UNREADABLE, f"{path}: cannot be read: {err.strerror or err}") from None


def _bounded(name: str, stream: BinaryIO | TextIO) -> bytes | str:
    data: bytes | str = stream.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(Problem.TOO_LARGE, f"{name}: larger than {MAX_INPUT_BYTES} bytes")
    return data


def read_stdin(stdin: TextIO) -> bytes | str:
    """Standard input as bytes when it has them (the YAML loader then finds the encoding)."""
    binary: BinaryIO | None = getattr(stdin, "buffer", None)
    try:
        return _bounded("-", binary if binary is not None else stdin)
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(Problem.UNREADABLE, f"-: cannot be read: {_one_line(str(err))}") from None


def paths(arg: str) -> list[Path]:
    """A file, or the manifests under a directory (files only, sorted)."""
    path = Path(arg)
    try:
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
        if not path.exists():
            raise InputError(Problem.NOT_FOUND, f"{arg}: no such file or directory")
    except OSError as err:
        raise InputError(Problem.UNREADABLE, f"{arg}: cannot be read: {err.strerror or err}") from None
    return [path]


def objects(args: Sequence[str], stdin: TextIO) -> Iterator[tuple[str, dict[str, Any]]]:
    """(source, object) for every Kubernetes object in the arguments, Lists flattened."""
    for arg in args:
        if arg == "-":
            sources: list[tuple[str, bytes | str]] = [("-", read_stdin(stdin))]
        else:
            sources = [(str(p), _read(p)) for p in paths(arg)]
        for name, data in sources:
            for doc in load_documents(name, data):
                if not isinstance(doc, dict):
                    raise InputError(Problem.NOT_AN_OBJECT, f"{name}: every document must be a Kubernetes object")
                items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
                if items is not None and not isinstance(items, list):
                    raise InputError(Problem.NOT_AN_OBJECT, f"{name}: the items of a List must be a list")
                for item in items or []:
                    if not isinstance(item, dict):
                        raise InputError(Problem.NOT_AN_OBJECT, f"{name}: every item must be a Kubernetes object")
                    yield name, item
