"""Where one thread spent its time, from py-spy's raw (collapsed) stacks.

    py-spy record --pid PID --threads -r 50 -d 40 -f raw -o stacks.txt
    python -m bench.pyspy_summary stacks.txt [--thread MainThread] [--out summary.json]

Prints, and writes as JSON, the share of the thread's samples in each function itself and
in each function with what it called (a frame counted once per sample). Reads .gz too.
"""

from __future__ import annotations

import argparse
import gzip
from collections import Counter
from pathlib import Path
from typing import Any

from bench.provenance import write_result


def summary(lines: list[str], thread: str, top: int = 40) -> dict[str, Any]:
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if not stack or not frames[0].endswith(f": {thread}"):
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames[1:]):
            within[frame] += samples

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "percent": round(100 * n / total, 1)} for f, n in counter.most_common(top)]

    return {"thread": thread, "samples": total, "self": share(own), "inclusive": share(within)} if total else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks", type=Path)
    parser.add_argument("--thread", default="MainThread")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    opener = gzip.open if args.stacks.suffix == ".gz" else open
    with opener(args.stacks, "rt") as stacks:
        result = summary(stacks.readlines(), args.thread)
    if not result:
        raise SystemExit(f"no samples of thread {args.thread} in {args.stacks}")
    if args.out:
        write_result(args.out, result)
    print(f"{result['samples']} samples of {args.thread}")
    for kind in ("self", "inclusive"):
        print(f"-- {kind}")
        for row in result[kind][:25]:
            print(f"{row['percent']:5.1f}%  {row['frame']}")


if __name__ == "__main__":
    main()
