"""The sidecar's reads of its own Pod, which a call to the hold needs (is the pod being deleted?)
and anyone who reaches the port can cause (calls.py).

One read at a time, each starting at least READ_INTERVAL after the last one started; the calls
that come meanwhile wait for the next read and share it. A read answers only the calls that
came before it began: a read that may predate the deletion kubelet acted on never answers
kubelet's call with "not being deleted". A read that found the pod being deleted answers every
later call at once (a deletion is not undone). Each read is consistent (k8s.NamespaceApi.own_pod),
and a read that fails or takes longer than the API timeout leaves its calls a typed reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from lameduck_sidecar.calls import READ_INTERVAL, bounded_names, next_read_at
from lameduck_sidecar.hold import FallbackReason, should_hold
from lameduck_sidecar.k8s import ApiError

log = logging.getLogger("lameduck.sidecar")
PodLookup = Callable[[], Awaitable[dict[str, Any]]]


class Look:
    """One read of the pod and the calls it answers."""

    def __init__(self, called: float, called_at: float) -> None:
        # The earliest call it answers: on the holder's clock, and by the wall clock.
        self.first_call = called
        self.first_call_at = called_at
        self.callers: list[str] = []  # bounded: calls.bounded_names
        self.pod: dict[str, Any] | None = None
        # Why the pod could not be read (None: it was), and the error, for the log.
        self.unreadable: FallbackReason | None = None
        self.detail = ""
        self.recorded = False  # whoever records the answer does so once per read
        self.done = asyncio.get_running_loop().create_future()

    @property
    def deleting(self) -> bool:
        return self.pod is not None and should_hold(self.pod)

    def join(self, caller: str) -> None:
        self.callers = bounded_names([*self.callers, caller])


class PodReads:
    def __init__(
        self,
        lookup: PodLookup | None,
        clock: Callable[[], float],
        timeout: float,
        *,
        interval: float = READ_INTERVAL,
        pod_name: str = "",
    ) -> None:
        self.lookup = lookup  # None: no API address, nothing to read
        self.clock = clock
        self.timeout = timeout
        self.interval = interval
        self.pod_name = pod_name
        self.pending: Look | None = None  # gathering calls until its read begins
        self.confirmed: Look | None = None  # the read that found the pod being deleted
        self.last_started: float | None = None
        self.turn = asyncio.Lock()
        self.reading: set[asyncio.Task[None]] = set()

    async def look(self, caller: str, called: float, called_at: float) -> Look:
        """The first read of the pod that begins after this call, or the one that found it being
        deleted."""
        if self.confirmed is not None:
            return self.confirmed
        look = self.pending
        if look is None:
            look = self.pending = Look(called, called_at)
            task = asyncio.create_task(self._read(look))
            self.reading.add(task)
            task.add_done_callback(self.reading.discard)
        look.join(caller)
        await asyncio.shield(look.done)
        return self.confirmed or look

    async def _read(self, look: Look) -> None:
        try:
            async with self.turn:
                if self.confirmed is None:
                    now = self.clock()
                    await asyncio.sleep(max(0.0, next_read_at(self.last_started, now, self.interval) - now))
                self.pending = None  # a call from now on waits for the next read
                if self.confirmed is None:
                    self.last_started = self.clock()
                    await self._ask(look)
                    if look.deleting:
                        self.confirmed = look
        finally:
            look.done.set_result(None)

    async def _ask(self, look: Look) -> None:
        if self.lookup is None:
            look.unreadable = FallbackReason.NO_API_ADDRESS
            return
        try:
            look.pod = await asyncio.wait_for(self.lookup(), self.timeout)
        except (TimeoutError, ApiError) as err:  # a fallback hold, and say so
            look.unreadable, look.detail = FallbackReason.API, f"{type(err).__name__}: {err}"
            log.warning(json.dumps({"event": "pod_unreadable", "pod": self.pod_name, "reason": str(err)}))
        except Exception as err:  # a bug of ours: still a fallback hold, with its traceback
            log.exception("reading the pod failed")
            look.unreadable, look.detail = FallbackReason.INTERNAL_ERROR, repr(err)
