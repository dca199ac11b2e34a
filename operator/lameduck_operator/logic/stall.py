"""What held the event loop during a stall, from clocks read around it.

The loop monitor reads, over each interval that ended late, the loop thread's CPU time, the
whole process's CPU time and the time spent in garbage collection. Which of them covers most
of the lag names the cause: what to fix differs for each.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# A stall this long delays watches, webhook answers and probes enough to count and explain.
STALL_SECONDS = 1.0


class StallCause(StrEnum):
    # The cyclic garbage collector: it holds the interpreter for the whole collection.
    GC = "gc"
    # Code on the loop thread that did not yield.
    LOOP_BUSY = "loop_busy"
    # Other threads of the operator (API client calls) held the interpreter.
    OTHER_THREADS = "other_threads"
    # The process got no CPU: other processes on the machine had it.
    NOT_SCHEDULED = "not_scheduled"


@dataclass(frozen=True, slots=True)
class StallClocks:
    """Seconds each clock advanced over the interval that ended late."""

    lag: float
    loop_cpu: float
    process_cpu: float
    gc: float


def stall_cause(clocks: StallClocks) -> StallCause:
    """The clock that covers at least half the lag, in the order a fix would look: garbage
    collection (which also counts as CPU of whichever thread ran it), the loop thread, other
    threads; else the process was waiting for a CPU."""
    half = clocks.lag / 2
    if clocks.gc >= half:
        return StallCause.GC
    if clocks.loop_cpu >= half:
        return StallCause.LOOP_BUSY
    if clocks.process_cpu - clocks.loop_cpu >= half:
        return StallCause.OTHER_THREADS
    return StallCause.NOT_SCHEDULED
