"""Many calls to a lameduck sidecar's port from another pod, run in a pod by
test_faults_serving.py (this file's text is given to `python3 -c`): CALLS, shuffled the same
way every run, CONCURRENCY at a time, each on a new connection. Prints one JSON line: when the
first call went out and the last answer came back (on this pod's monotonic clock), and per
kind of call how it was answered ("200 not_deleting": the status, and a hold call's outcome).

    python3 -c "$(cat sidecar_flood.py)" POD_IP SIDECAR_PORT
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

CONCURRENCY = 50
# A name no container can have, three ways: upper case and "_", 64 characters, a "/" sent
# percent-encoded (the sidecar decodes the name before judging it).
INVALID_NAMES = ("Not_A_Name", "a" * 64, "x%2Fy")
# (kind, method, path, how many): 500 calls.
CALLS = (
    ("hold_app", "GET", "/hold/app", 250),
    ("hold_strangers", "GET", "/hold/stranger-{i}", 100),  # 100 names a container could have
    ("hold_invalid", "GET", "/hold/{invalid}", 50),
    ("hold_post", "POST", "/hold/app", 25),
    ("metrics", "GET", "/metrics", 50),
    ("healthz", "GET", "/healthz", 25),
)
TIMEOUT_SECONDS = 30


def planned() -> list[tuple[str, str, str]]:
    calls = [
        (kind, method, path.format(i=i, invalid=INVALID_NAMES[i % len(INVALID_NAMES)]))
        for kind, method, path, count in CALLS
        for i in range(count)
    ]
    random.Random(0).shuffle(calls)
    return calls


def call(host: str, port: int, method: str, path: str) -> str:
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
    except OSError as err:
        return type(err).__name__
    finally:
        connection.close()
    if response.status == 200 and path.startswith("/hold/"):
        return f"200 {json.loads(body)['outcome']}"
    return str(response.status)


def flood(host: str, port: int) -> dict[str, object]:
    calls = planned()
    began = time.monotonic()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(lambda c: call(host, port, c[1], c[2]), calls))
    ended = time.monotonic()
    by_kind: dict[str, Counter[str]] = {}
    for (kind, _, _), answer in zip(calls, answers, strict=True):
        by_kind.setdefault(kind, Counter())[answer] += 1
    return {
        "event": "flood",
        "calls": len(calls),
        "seconds": round(ended - began, 3),
        "answers": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
    }


if __name__ == "__main__":
    print(json.dumps(flood(sys.argv[1], int(sys.argv[2]))), flush=True)
