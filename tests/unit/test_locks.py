"""The images install their third-party packages from hashed locks (requirements/, `make locks`):
each lock pins exactly what pyproject.toml asks for, every pin satisfies its specifier, every
package is pinned to one version with sha256 hashes, and the Dockerfile installs the locks with
--require-hashes --no-deps and the project itself with --no-deps."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.images import IMAGE_SOURCES
from tests.unit.repo_data import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# lock file -> what pyproject.toml asks for (hack/lock.sh writes each from these)
WANTED = {
    "operator": PYPROJECT["project"]["dependencies"],
    "sidecar": PYPROJECT["project"]["optional-dependencies"]["sidecar"],
    "build": PYPROJECT["build-system"]["requires"],
}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) \\$")


def parse_lock(text: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (version, hashes, what it is there for) from pip-compile's output."""
    entries: dict[str, tuple[str, list[str], list[str]]] = {}
    current = ""
    in_via = False
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match["name"])
            assert current not in entries, f"{current} pinned twice"
            entries[current] = (match["version"], [], [])
            in_via = False
        elif line.strip().startswith("--hash=sha256:"):
            entries[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif line.strip().startswith("# via"):
            via = line.strip().removeprefix("# via").strip()
            in_via = not via
            if via:
                entries[current][2].append(via)
        elif in_via and line.strip().startswith("#   "):
            entries[current][2].append(line.strip().removeprefix("#").strip())
        elif line.strip() and not line.startswith("#"):
            raise AssertionError(f"a line pip-compile does not write: {line!r}")
    return entries


def lock(name: str) -> dict[str, tuple[str, list[str], list[str]]]:
    return parse_lock((REPO / "requirements" / f"{name}.txt").read_text())


def disagreements(name: str, pinned: dict[str, tuple[str, list[str], list[str]]]) -> list[str]:
    """Where a lock and pyproject.toml disagree: a requirement missing from the lock or pinned to a
    version its specifier refuses, or a package the lock asks for that pyproject.toml does not
    (pip-compile marks what its input asked for `via -r NAME.in`)."""
    found = []
    wanted: dict[str, Requirement] = {canonicalize_name(Requirement(r).name): Requirement(r) for r in WANTED[name]}
    for wanted_key, requirement in wanted.items():
        if wanted_key not in pinned:
            found.append(f"{requirement} (pyproject.toml) is not in requirements/{name}.txt")
        elif not requirement.specifier.contains(pinned[wanted_key][0], prereleases=True):
            found.append(
                f"requirements/{name}.txt pins {wanted_key}=={pinned[wanted_key][0]}, which {requirement} refuses"
            )
    for pinned_key, (_, _, via) in pinned.items():
        if f"-r {name}.in" in via and pinned_key not in wanted:
            found.append(f"requirements/{name}.txt asks for {pinned_key}, which pyproject.toml no longer names")
        if not via or any(why != f"-r {name}.in" and canonicalize_name(why) not in pinned for why in via):
            found.append(f"{pinned_key} is in requirements/{name}.txt for {via}, which the lock does not hold")
    return found


@pytest.mark.parametrize("name", sorted(WANTED))
def test_each_lock_agrees_with_pyproject(name: str) -> None:
    assert disagreements(name, lock(name)) == [], "run make locks"


def test_a_stale_a_missing_and_a_dropped_requirement_are_each_a_disagreement() -> None:
    text = (REPO / "requirements" / "operator.txt").read_text()
    stale = re.sub(r"^h11==\S+ ", "h11==0.14.0 ", text, flags=re.MULTILINE)
    assert [d for d in disagreements("operator", parse_lock(stale)) if "h11==0.14.0" in d]
    pinned = parse_lock(text)
    missing = {k: v for k, v in pinned.items() if k != "kopf"}
    assert [d for d in disagreements("operator", missing) if d.startswith("kopf")]
    dropped = dict(pinned, requests=(pinned["requests"][0], [], ["-r operator.in"]))
    assert [d for d in disagreements("operator", dropped) if "asks for requests" in d]


@pytest.mark.parametrize("name", sorted(WANTED))
def test_every_pin_has_sha256_hashes(name: str) -> None:
    for key, (_, hashes, _) in lock(name).items():
        assert hashes, f"{key} has no hash in requirements/{name}.txt"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), key


def test_the_sidecar_lock_is_the_sidecar_extra_alone() -> None:
    assert set(lock("sidecar")) == {"h11"}


def dockerfile_runs(stage: str) -> list[str]:
    dockerfile = (REPO / "Dockerfile").read_text().replace("\\\n", "")
    body = dockerfile.split(f"FROM build AS {stage}", 1)[1].split("\nFROM ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("RUN ")]


@pytest.mark.parametrize(("stage", "image"), [("operator-build", "operator"), ("sidecar-build", "sidecar")])
def test_each_build_stage_installs_its_lock_by_hash_and_then_the_project_without_dependencies(
    stage: str, image: str
) -> None:
    runs = dockerfile_runs(stage)
    installs = [i for run in runs for i in re.findall(r"pip install [^&]*", run)]
    assert len(installs) == 2, installs
    locked, project = installs[0].split(), installs[1].split()
    assert {"--require-hashes", "--no-deps"} <= set(locked)
    files = [locked[i + 1] for i, word in enumerate(locked) if word == "-r"]
    assert files == ["/src/requirements/build.txt", f"/src/requirements/{image}.txt"]
    assert {"--no-deps", "--no-build-isolation"} <= set(project)
    assert project[-1] == "/src"
    assert "--require-hashes" not in project, "the project is a local directory: it has no hash"


@pytest.mark.parametrize("image", ["operator", "sidecar"])
def test_the_harness_builds_an_image_again_when_anything_its_build_stage_copies_changes(image: str) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stage = dockerfile.split(f"FROM build AS {image}-build", 1)[1].split("\nFROM ", 1)[0]
    copied = {line.split()[1] for line in stage.splitlines() if line.startswith("COPY ")}
    assert "requirements" in copied
    assert copied <= set(IMAGE_SOURCES[f"lameduck/{image}:dev"].inputs)
