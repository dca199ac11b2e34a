from __future__ import annotations

from lameduck_operator.logic.retry import Backoff


def test_delays_double_per_key_up_to_the_cap_and_start_over_after_a_success() -> None:
    backoff: Backoff[str] = Backoff(cap=5.0)
    assert [backoff.failed("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.failed("b") == 1.0, "each key counts its own failures"
    backoff.succeeded("a")
    assert backoff.failed("a") == 1.0
    backoff.succeeded("a")
    backoff.succeeded("b")
    backoff.succeeded("never failed")
    assert len(backoff) == 0, "nothing is kept for keys that succeeded"
