"""A venv holding what an image's build stage installs, made on this machine without building the
image: the stage's COPY and RUN lines of a checkout's Dockerfile, run with /opt/lameduck and
/src moved under a folder of one's choosing (the `build` stage before it: a venv at
/opt/lameduck, pyproject.toml and README.md in /src). bench/sidecar_idle.py runs the sidecar
of each commit on the venv its Dockerfile's sidecar stage makes.

    python -m bench.image_venv --checkout /tmp/checkout-before --out /tmp/img-before [--stage sidecar-build]
    # then: --variant before=/tmp/img-before/opt/lameduck/bin/python,/tmp/checkout-before

Only COPY of the checkout's own paths and RUN are understood; anything else in the stage fails.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path


def stage_lines(dockerfile: str, stage: str) -> list[str]:
    """The instructions of one stage, each on one line (continuations joined as Docker does)."""
    lines = dockerfile.replace("\\\n", "").splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(rf"FROM \S+ AS {re.escape(stage)}", line))
    found = []
    for line in lines[start + 1 :]:
        if line.startswith("FROM "):
            break
        if line.strip() and not line.lstrip().startswith("#"):
            found.append(line)
    return found


def moved(command: str, root: Path) -> str:
    """A RUN's command with the image's paths under root (in one pass: root may be under /tmp)."""
    return re.sub(r"/opt/lameduck|/src\b|/tmp/", lambda m: f"{root}{m.group(0)}", command)


def make(checkout: Path, root: Path, stage: str, python: str) -> None:
    instructions = stage_lines((checkout / "Dockerfile").read_text(), stage)
    shutil.rmtree(root, ignore_errors=True)
    (root / "src").mkdir(parents=True)
    (root / "tmp").mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(checkout / name, root / "src" / name)
    subprocess.run([python, "-m", "venv", str(root / "opt" / "lameduck")], check=True)
    for line in instructions:
        keyword, _, rest = line.partition(" ")
        if keyword == "COPY" and len(rest.split()) == 2 and rest.split()[1] == f"/src/{rest.split()[0]}":
            source = checkout / rest.split()[0]
            if source.is_dir():
                shutil.copytree(source, root / "src" / rest.split()[0])
            else:
                shutil.copy(source, root / "src" / rest.split()[0])
        elif keyword == "RUN":
            subprocess.run(["sh", "-c", moved(rest, root)], check=True)
        elif keyword != "ARG":
            raise SystemExit(f"not understood here: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout of the commit whose Dockerfile to run")
    parser.add_argument("--out", type=Path, required=True, help="the folder to make it in (replaced)")
    parser.add_argument("--stage", default="sidecar-build")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the venv is made from")
    args = parser.parse_args()
    make(args.checkout.resolve(), args.out.resolve(), args.stage, args.python)
    print(f"made {args.out / 'opt' / 'lameduck'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
