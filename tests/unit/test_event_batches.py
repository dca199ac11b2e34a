"""One Event per policy and burst: which Deployments a batch gathers, when it is due, what it says."""

from __future__ import annotations

import pytest

from lameduck_operator.logic.event_batches import (
    MAX_MESSAGE,
    OPEN_SECONDS,
    QUIET_SECONDS,
    BatchKey,
    EventBatches,
    PolicyEvent,
    told,
)
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.status import MAX_LISTED
from lameduck_operator.model import PolicyRef

WEB = PolicyRef("GracefulPolicy", "web", "shop")
FLEET = PolicyRef("ClusterGracefulPolicy", "fleet")
INJECTED = "injected the preStop hold, termination budget 65s, into"
KEY: BatchKey = (WEB, "Injected", INJECTED, False)


def refs(n: int, namespace: str = "shop", prefix: str = "app-") -> list[DeploymentRef]:
    return [DeploymentRef(namespace, f"{prefix}{i:02d}") for i in range(n)]


@pytest.mark.parametrize(
    ("policy", "deployments", "message"),
    [
        pytest.param(WEB, refs(1), f"{INJECTED} 1 Deployment: app-00", id="one, by name under a GracefulPolicy"),
        pytest.param(WEB, refs(3), f"{INJECTED} 3 Deployments: app-00, app-01, app-02", id="three"),
        pytest.param(
            FLEET,
            [DeploymentRef("a", "web"), DeploymentRef("b", "web")],
            f"{INJECTED} 2 Deployments: a/web, b/web",
            id="by namespace/name under a cluster policy",
        ),
        pytest.param(
            WEB,
            refs(MAX_LISTED + 5),
            f"{INJECTED} {MAX_LISTED + 5} Deployments: " + ", ".join(r.name for r in refs(MAX_LISTED)) + " and 5 more",
            id="the first MAX_LISTED, then how many more",
        ),
    ],
)
def test_what_a_policys_event_says(policy: PolicyRef, deployments: list[DeploymentRef], message: str) -> None:
    assert told(policy, INJECTED, deployments) == message


def test_long_names_are_listed_only_while_the_message_fits() -> None:
    long = refs(MAX_LISTED, prefix="x" * 240)
    message = told(WEB, INJECTED, long)
    assert len(message) <= MAX_MESSAGE
    assert message.endswith(" more")
    listed = message.split(": ", 1)[1].rsplit(" and ", 1)[0].split(", ")
    assert 1 <= len(listed) < MAX_LISTED
    assert message.endswith(f" and {MAX_LISTED - len(listed)} more")


def test_a_burst_is_told_once_its_quiet_and_every_deployment_once() -> None:
    batches = EventBatches()
    for second, ref in enumerate(refs(5)):
        batches.add(KEY, ref, now=float(second))
    batches.add(KEY, refs(1)[0], now=4.5)  # reconciled again: listed once
    assert batches.next_due() == 4.5 + QUIET_SECONDS
    assert batches.due(4.5 + QUIET_SECONDS - 0.1) == []
    assert batches.due(4.5 + QUIET_SECONDS) == [PolicyEvent(WEB, "Injected", told(WEB, INJECTED, refs(5)))]
    assert len(batches) == 0
    assert batches.next_due() is None


def test_a_long_burst_is_told_when_its_batch_has_been_open_long_enough_and_the_rest_after() -> None:
    batches = EventBatches()
    for tick in range(int(OPEN_SECONDS) + 1):
        batches.add(KEY, DeploymentRef("shop", f"d{tick}"), now=float(tick))
    assert batches.next_due() == OPEN_SECONDS, "not later than OPEN_SECONDS after the first joined"
    (first,) = batches.due(OPEN_SECONDS)
    assert first.message.startswith(f"{INJECTED} {int(OPEN_SECONDS) + 1} Deployments: d0, d1,")
    batches.add(KEY, DeploymentRef("shop", "late"), now=OPEN_SECONDS + 1)
    assert batches.due(OPEN_SECONDS + 1 + QUIET_SECONDS) == [
        PolicyEvent(WEB, "Injected", f"{INJECTED} 1 Deployment: late")
    ]


@pytest.mark.parametrize(
    "other",
    [
        pytest.param((FLEET, "Injected", INJECTED, False), id="another policy"),
        pytest.param((WEB, "Updated", "updated lameduck's fields on", False), id="another reason"),
        pytest.param(
            (WEB, "Injected", "injected the preStop hold, termination budget 95s, into", False), id="another budget"
        ),
    ],
)
def test_what_differs_is_told_apart(other: BatchKey) -> None:
    batches = EventBatches()
    batches.add(KEY, DeploymentRef("shop", "a"), now=0)
    batches.add(other, DeploymentRef("shop", "b"), now=0)
    assert len(batches.due(QUIET_SECONDS)) == 2


def test_at_shutdown_every_open_batch_is_told_at_once() -> None:
    batches = EventBatches()
    batches.add(KEY, DeploymentRef("shop", "a"), now=0)
    assert [e.message for e in batches.all()] == [f"{INJECTED} 1 Deployment: a"]
    assert len(batches) == 0
