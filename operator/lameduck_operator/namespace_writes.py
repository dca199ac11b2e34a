"""Per-namespace objects the operator keeps (the sidecar's Role and RoleBinding, the learned
delays' ConfigMap): which namespaces to write again, and the retries of those that failed."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

from lameduck_operator.logic.retry import Backoff
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.ports import CallLater, one_line

log = logging.getLogger("lameduck.fleet")
MAX_RETRY_SECONDS = 60.0


class NamespaceWrites:
    """Namespaces whose object is to be written at the next pass; a failed write is retried
    after a doubling delay per namespace, counted under `operation` in the API errors."""

    def __init__(
        self,
        what: str,
        operation: str,
        metrics: OperatorMetrics,
        call_later: CallLater,
    ) -> None:
        self.what = what
        self.operation = operation
        self.metrics = metrics
        self.call_later = call_later
        self.dirty: set[str] = set()
        self._retries: Backoff[str] = Backoff(MAX_RETRY_SECONDS)

    def add(self, namespace: str) -> None:
        self.dirty.add(namespace)

    def update(self, namespaces: Iterable[str]) -> None:
        self.dirty.update(namespaces)

    async def write(self, write_in: Callable[[str], Awaitable[None]]) -> None:
        """Write each namespace marked since the last pass, in order."""
        dirty, self.dirty = self.dirty, set()
        for namespace in sorted(dirty):
            try:
                await write_in(namespace)
            except Exception as err:
                self.metrics.api_errors.labels(operation=self.operation).inc()
                delay = self._retries.failed(namespace)
                self.call_later(delay, partial(self.dirty.add, namespace))
                log.warning(
                    "could not update %s in %s (retry in %.0fs): %s", self.what, namespace, delay, one_line(err)
                )
            else:
                self._retries.succeeded(namespace)
