"""Calls to the sidecar's port, which anyone who reaches the pod can make: which names are
refused, and that a hold's callers and report stay small whatever comes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lameduck_sidecar.after_release import AfterRelease
from lameduck_sidecar.calls import MAX_CONTAINERS, bounded_names, next_read_at, valid_container
from lameduck_sidecar.hold import HoldResult, HoldSettings, Outcome
from lameduck_sidecar.report import hold_report_event, report_message
from lameduck_sidecar.traffic import Snapshot

FAST = HoldSettings(propagation_delay=0.3, quiet_period=0.1, max_hold=3.0, api_timeout=0.5, fallback_delay=0.6)
NO_SOCKETS = Snapshot(None, 0, 0, [])
# The API server refuses a request body over 3 MiB (413: issue 24's report was lost so) and etcd
# keeps values up to 1.5 MiB. The report is held to a small fixed budget, so that a bound that
# breaks shows here long before it reaches those.
API_SERVER_BODY_LIMIT = 3 * 1024 * 1024
REPORT_BUDGET = 4096
LOG_LINE_BUDGET = 4096


# Pure: names and spacing.


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("app", True),
        ("log-shipper", True),
        ("a" * 63, True),
        ("0web", True),
        ("a" * 64, False),
        ("", False),
        ("App", False),
        ("-app", False),
        ("app-", False),
        ("app_1", False),
        ("app.1", False),
        ("..", False),
        ("app\n", False),
        ("app%20", False),
    ],
)
def test_only_a_dns_label_can_name_a_container(name: str, valid: bool) -> None:
    assert valid_container(name) is valid


def test_reads_start_an_interval_apart() -> None:
    assert next_read_at(None, 5.0, 1.0) == 5.0, "the first read at once"
    assert next_read_at(4.5, 5.0, 1.0) == 5.5
    assert next_read_at(3.0, 5.0, 1.0) == 5.0


def test_callers_recorded_are_distinct_and_bounded() -> None:
    names = bounded_names(["app", "app", *(f"c{i}" for i in range(1000))])
    assert names[:2] == ["app", "c0"]
    assert len(names) == MAX_CONTAINERS


def worst_case_result() -> HoldResult:
    big = 10**15
    return HoldResult(Outcome.TIMEOUT, 1e15 / 3, 1e15 / 7, 1e15 / 9, big, big, big, 1e15 / 11, 1e15 / 13)


def test_the_worst_case_report_is_far_below_the_api_servers_limit() -> None:
    """Every part at its bound: names at the API's lengths (pod and ReplicaSet names 253,
    namespace and label values 63), MAX_CONTAINERS callers of 63 characters, every number long."""
    replica_set = "r" * 242 + "-" + "h" * 10
    worst_pod = {
        "metadata": {
            "labels": {"pod-template-hash": "h" * 63},
            "ownerReferences": [{"kind": "ReplicaSet", "name": replica_set}],
        }
    }
    callers = bounded_names([f"{i:04d}-" + "x" * 58 for i in range(1500)])
    message = report_message(
        worst_case_result(),
        policy="ClusterGracefulPolicy/" + "n" * 63 + "/" + "p" * 253,
        max_hold=1e15 / 17,
        grace_period=1e15 / 19,
        pod=worst_pod,
        containers=callers,
        after=AfterRelease(10**15, 1e15 / 23, 10**15, 1e15 / 29),
    )
    event = hold_report_event(message, namespace="n" * 63, pod_name="p" * 253, pod_uid="u" * 36, now=datetime.now(UTC))
    size = len(json.dumps(event).encode())
    assert size < REPORT_BUDGET < API_SERVER_BODY_LIMIT
