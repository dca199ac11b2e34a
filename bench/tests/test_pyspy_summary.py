"""bench.pyspy_summary: one thread's share of samples, in a function itself and with its callees."""

from __future__ import annotations

from bench.pyspy_summary import summary

STACKS = [
    "thread (1): MainThread;run (a.py:1);select (s.py:9) 6\n",
    "thread (1): MainThread;run (a.py:1);handle (h.py:2);loads (j.py:3) 3\n",
    "thread (1): MainThread;run (a.py:1);handle (h.py:2) 1\n",
    "thread (7): worker_0;wait (t.py:5) 50\n",
]


def test_only_the_named_threads_samples_count() -> None:
    assert summary(STACKS, "MainThread")["samples"] == 10
    assert summary(STACKS, "worker_0")["samples"] == 50
    assert summary(STACKS, "nobody") == {}


def test_a_function_is_counted_by_itself_and_with_what_it_called() -> None:
    result = summary(STACKS, "MainThread")
    own = {row["frame"]: row["percent"] for row in result["self"]}
    within = {row["frame"]: row["percent"] for row in result["inclusive"]}
    assert own == {"select (s.py:9)": 60.0, "loads (j.py:3)": 30.0, "handle (h.py:2)": 10.0}
    assert within["handle (h.py:2)"] == 40.0
    assert within["run (a.py:1)"] == 100.0
