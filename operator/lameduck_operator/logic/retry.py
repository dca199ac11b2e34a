"""When to try again after a failed API write: one doubling backoff per key, capped, forgotten on success."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Backoff(Generic[K]):
    """Delays of 1, 2, 4, ... seconds, at most `cap`, counted per key (a Deployment, a pod, a namespace)."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self._failures: dict[K, int] = {}

    def failed(self, key: K) -> float:
        """Note one more failure for the key; the seconds to wait before its next try."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return min(self.cap, 2.0 ** (failures - 1))

    def succeeded(self, key: K) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
