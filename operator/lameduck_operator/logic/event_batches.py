"""What lameduck did to a policy's Deployments, told in one Event on the policy per burst.

A policy changed over a fleet starts a burst of writes, one per Deployment; an Event on each
Deployment made half of the operator's API calls in such a burst. What a policy did alike to
many Deployments (injected its hold, updated or removed its fields) is gathered instead, by
policy, reason and what was done, and told in one Event on the policy listing them: once the
burst is over (no Deployment joined for `quiet` seconds) or, in a long burst, `open_for`
seconds after the first one joined. The list is bounded (the first MAX_LISTED, in the order
they joined, and "and N more"), and so is the message. Time is an argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.status import MAX_LISTED
from lameduck_operator.model import PolicyRef

# The burst is over when no Deployment joined a batch for this long.
QUIET_SECONDS = 2.0
# A longer burst is told this long after its first Deployment joined, and the rest in the next Event.
OPEN_SECONDS = 60.0
# What the API server keeps of an Event's message (events.k8s.io's note; lameduck keeps to it for both).
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class PolicyEvent:
    """An Event on a policy."""

    policy: PolicyRef
    reason: str
    message: str
    warning: bool = False


# What a batch gathers alike: the policy, the Event's reason, what was done (the words before
# the count) and whether it warns.
BatchKey = tuple[PolicyRef, str, str, bool]


@dataclass
class _Batch:
    opened: float
    last: float
    deployments: dict[DeploymentRef, None] = field(default_factory=dict)


def told(policy: PolicyRef, done: str, deployments: Sequence[DeploymentRef]) -> str:
    """`done` and the Deployments it was done to: "<done> 3 Deployments: a, b, c", named by name
    under a GracefulPolicy (all in its namespace) and by namespace/name under a cluster policy;
    the first MAX_LISTED that fit in MAX_MESSAGE, then "and N more"."""
    count = len(deployments)
    head = f"{done} {count} Deployment{'' if count == 1 else 's'}: "
    names = [d.name if policy.namespace else f"{d.namespace}/{d.name}" for d in deployments]
    listed: list[str] = []
    for name in names[:MAX_LISTED]:
        rest = count - len(listed) - 1
        tail = f" and {rest} more" if rest else ""
        if len(head) + len(", ".join([*listed, name])) + len(tail) > MAX_MESSAGE:
            break
        listed.append(name)
    more = count - len(listed)
    return head + ", ".join(listed) + (f" and {more} more" if more else "")


class EventBatches:
    """The open batches, by BatchKey, and which are due at a given time."""

    def __init__(self, quiet: float = QUIET_SECONDS, open_for: float = OPEN_SECONDS) -> None:
        self.quiet = quiet
        self.open_for = open_for
        self._open: dict[BatchKey, _Batch] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, key: BatchKey, deployment: DeploymentRef, now: float) -> None:
        """The Deployment joins the key's batch (opened now if there is none); once per batch."""
        batch = self._open.setdefault(key, _Batch(opened=now, last=now))
        batch.last = now
        batch.deployments[deployment] = None

    def due_at(self, key: BatchKey) -> float:
        batch = self._open[key]
        return min(batch.last + self.quiet, batch.opened + self.open_for)

    def next_due(self) -> float | None:
        """When the next batch falls due; None: none is open."""
        return min((self.due_at(key) for key in self._open), default=None)

    def due(self, now: float) -> list[PolicyEvent]:
        """The Events of the batches due by now, which are closed; in the order they opened."""
        return self._close([key for key in self._open if self.due_at(key) <= now])

    def all(self) -> list[PolicyEvent]:
        """Every open batch's Event, now (the operator is stopping)."""
        return self._close(list(self._open))

    def _close(self, keys: list[BatchKey]) -> list[PolicyEvent]:
        events = []
        for key in keys:
            policy, reason, done, warning = key
            batch = self._open.pop(key)
            events.append(PolicyEvent(policy, reason, told(policy, done, list(batch.deployments)), warning))
        return events
