"""Calls to the hold: which are refused, which callers a hold records, how far apart the reads of
the pod they cause are. Pure.

The sidecar's port answers anyone who can reach the pod: kubelet's preStop call carries no
credentials. So a call must cost little: a container name that is not a DNS-1123 label (what
every container name is) is refused before the API is asked (`valid_container`); a hold records
at most MAX_CONTAINERS distinct names (`bounded_names`), so its log line and report stay small
however many calls come; and the reads of the pod the calls cause start at least READ_INTERVAL
apart (`next_read_at`; pod_reads.py shares each read among the calls that wait for it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum

# A container name is a DNS-1123 label: at most 63 characters; a pod has few app containers.
MAX_CONTAINERS = 16
MAX_NAME_LENGTH = 63
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# Reads of the pod start at least this far apart, however many calls come: N calls a second cost
# at most one read a second.
READ_INTERVAL = 1.0


class Answer(StrEnum):
    """How a call to the hold was answered."""

    HOLD = "hold"  # joined the hold of the pod's deletion, confirmed by a read of the pod
    FALLBACK = "fallback"  # the pod could not be read: a fallback hold that uses nothing up
    NOT_DELETING = "not_deleting"  # a read found the pod not being deleted: at once
    INVALID_CONTAINER = "invalid_container"  # refused at once: no container has that name


def valid_container(name: str) -> bool:
    """Whether `name` can be a container's name: a DNS-1123 label."""
    return len(name) <= MAX_NAME_LENGTH and DNS_LABEL.fullmatch(name) is not None


def bounded_names(names: Sequence[str]) -> list[str]:
    """The first MAX_CONTAINERS distinct names, each cut to MAX_NAME_LENGTH."""
    found: list[str] = []
    for name in names:
        cut = name[:MAX_NAME_LENGTH]
        if cut not in found:
            found.append(cut)
        if len(found) == MAX_CONTAINERS:
            break
    return found


def next_read_at(last_started: float | None, now: float, interval: float) -> float:
    """When the next read of the pod may start: now, or `interval` after the last one started."""
    return now if last_started is None else max(now, last_started + interval)
