"""What held the event loop during a stall: the clock that covers most of the lag names it."""

from __future__ import annotations

import pytest

from lameduck_operator.logic.stall import StallCause, StallClocks, stall_cause


@pytest.mark.parametrize(
    ("clocks", "cause"),
    [
        # The collector runs on some thread: its time is also that thread's CPU.
        (StallClocks(lag=4.0, loop_cpu=3.9, process_cpu=4.0, gc=3.5), StallCause.GC),
        (StallClocks(lag=4.0, loop_cpu=3.9, process_cpu=4.0, gc=0.1), StallCause.LOOP_BUSY),
        (StallClocks(lag=2.0, loop_cpu=0.1, process_cpu=1.9, gc=0.0), StallCause.OTHER_THREADS),
        (StallClocks(lag=2.0, loop_cpu=0.1, process_cpu=0.3, gc=0.0), StallCause.NOT_SCHEDULED),
        # Exactly half is enough; just under is not.
        (StallClocks(lag=2.0, loop_cpu=0.0, process_cpu=1.0, gc=1.0), StallCause.GC),
        (StallClocks(lag=2.0, loop_cpu=0.99, process_cpu=0.99, gc=0.0), StallCause.NOT_SCHEDULED),
    ],
)
def test_the_clock_covering_half_the_lag_names_the_stall(clocks: StallClocks, cause: StallCause) -> None:
    assert stall_cause(clocks) is cause
