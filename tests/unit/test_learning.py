"""The learned pooled delay: a table of cases, each naming the term of the rule it exercises, and
properties over generated reports."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lameduck_operator.logic.learning import (
    LOSS_FACTOR,
    LOSS_STEP_SECONDS,
    Learned,
    learn,
    learned_data,
    learned_value,
    parse_learned,
    starting_value,
)
from lameduck_operator.logic.shutdown import RECOMMENDATION_HEADROOM, HoldOutcome, HoldReport
from lameduck_operator.model import HoldMethod, HoldSpec, LearnedBudget

MAX_HOLD = 30.0


def hold(max_hold: float, cap: float | None = None, quiet: float = 1.0) -> HoldSpec:
    """A policy's hold with this maxHold; with a cap, one that learns budgets up to it."""
    budget = None if cap is None else LearnedBudget(max_hold_cap=cap)
    return HoldSpec(HoldMethod.SIDECAR, 0.0, quiet, max_hold, learned_budget=budget)


def report(
    *,
    pooled: float | None = None,
    lost: int | None = 0,
    learned: float | None = 0.0,
    stage2: float | None = 3.0,
    hold: float = 4.0,
    stage1: float | None = 1.0,
    last_loss: float | None = None,
    pinned: int = 0,
    headless: bool = False,
    lame_duck: bool = False,
) -> HoldReport:
    return HoldReport(
        event_uid="e",
        namespace="shop",
        pod="web-1",
        pod_uid="p",
        deployment="web",
        policy=None,
        outcome=HoldOutcome.QUIET,
        hold_seconds=hold,
        stage1_seconds=stage1,
        stage2_seconds=stage2,
        late_traffic_seconds=0.0,
        max_hold_seconds=MAX_HOLD,
        grace_period_seconds=None,
        lost_after_release=lost,
        pooled_quiet_seconds=pooled,
        learned_delay_seconds=learned,
        last_loss_seconds=last_loss,
        pinned_until_closed=pinned,
        headless=headless,
        lame_duck=lame_duck,
    )


@pytest.mark.parametrize(
    ("reports", "max_hold", "delay"),
    [
        ([report()], MAX_HOLD, 0.0),  # no late traffic: the fast path
        ([report(pooled=None, lost=0), report(pooled=None, lost=None)], MAX_HOLD, 0.0),  # pinned only
        ([report(pooled=4.0)], MAX_HOLD, 4.0 * RECOMMENDATION_HEADROOM),
        ([report(pooled=4.0), report(pooled=2.0)], MAX_HOLD, 5.0),  # the largest recent quiet
        ([report(pooled=0.0011)], MAX_HOLD, 0.002),  # rounded up to the millisecond
        # A loss with a learned delay: 1.5 times it, or one second more when that is more.
        ([report(learned=4.0, lost=2)], MAX_HOLD, 4.0 * LOSS_FACTOR),
        ([report(learned=0.0, lost=1, stage2=0.0)], MAX_HOLD, LOSS_STEP_SECONDS),
        ([report(learned=1.0, lost=1, stage2=0.5)], MAX_HOLD, 2.0),
        # What the hold held after stage 1 counts when it was more than its learned delay: a
        # learned 0 waited the policy's propagationDelay, and a loss must raise it above that.
        ([report(learned=0.0, lost=1, stage2=2.5)], MAX_HOLD, 2.5 * LOSS_FACTOR),
        # ... or the quiet it saw, with headroom, if that is more.
        ([report(learned=2.0, lost=5, pooled=8.0)], MAX_HOLD, 10.0),
        # A learning hold that lost: what it held after stage 1 counts as what it used.
        ([report(learned=None, lost=1, stage2=6.0)], MAX_HOLD, 9.0),
        ([report(learned=None, lost=1, stage2=None, hold=7.0, stage1=1.0)], MAX_HOLD, 9.0),
        # A loss whose time is known: at least from stage 1 to it, with headroom, in one step.
        ([report(learned=0.0, lost=3, stage2=2.0, last_loss=4.0)], MAX_HOLD, 6.0 * RECOMMENDATION_HEADROOM),
        # ... and never below the stepped rule when that is more.
        ([report(learned=8.0, lost=1, stage2=8.0, last_loss=0.1)], MAX_HOLD, 8.0 * LOSS_FACTOR),
        # A time without a counted loss teaches nothing.
        ([report(learned=0.0, lost=0, stage2=2.0, last_loss=4.0)], MAX_HOLD, 0.0),
        # Busy connections closed only by the app, none quiet by itself, and a headless Service
        # listing the pod: what the hold used (it lost nothing) is kept, not dropped to 0.
        ([report(learned=None, stage2=29.8, pinned=2, headless=True)], MAX_HOLD, 29.8),
        ([report(learned=12.0, stage2=13.0, pinned=2, headless=True)], MAX_HOLD, 13.0),
        # ... not without the headless Service (clients pinned through kube-proxy: the fast path),
        ([report(learned=None, stage2=29.8, pinned=2)], MAX_HOLD, 0.0),
        # ... nor when the app was in lame-duck mode, nor when one went quiet by itself.
        ([report(learned=None, stage2=29.8, pinned=2, headless=True, lame_duck=True)], MAX_HOLD, 0.0),
        ([report(learned=None, stage2=29.8, pinned=2, headless=True, pooled=4.0)], MAX_HOLD, 5.0),
        # A headless Service with nothing busy at release: nothing to keep.
        ([report(learned=None, stage2=2.0, pinned=0, headless=True)], MAX_HOLD, 0.0),
        # A loss that was not counted (None) or was none corrects nothing.
        ([report(learned=4.0, lost=None)], MAX_HOLD, 0.0),
        # Never above the policy's maxHold.
        ([report(pooled=100.0)], MAX_HOLD, MAX_HOLD),
        ([report(learned=25.0, lost=1)], MAX_HOLD, MAX_HOLD),
        ([report(pooled=3.0)], 2.0, 2.0),
    ],
    ids=[
        "no-late-traffic",
        "pinned-only",
        "quiet-with-headroom",
        "largest-quiet",
        "millisecond-up",
        "loss-factor",
        "loss-step-from-zero",
        "loss-step-above-factor",
        "loss-after-a-learned-zero-counts-what-was-held",
        "loss-below-quiet",
        "learning-hold-loss",
        "learning-hold-loss-without-stage-2",
        "loss-time-in-one-step",
        "loss-time-below-step",
        "loss-time-without-loss",
        "headless-pinned-keeps-what-was-lossless",
        "headless-pinned-keeps-the-learned-hold",
        "pinned-without-headless-is-the-fast-path",
        "lame-duck-removes-the-doubt",
        "pooled-quiet-decides",
        "headless-nothing-busy",
        "loss-not-counted",
        "capped",
        "loss-capped",
        "policy-cap",
    ],
)
def test_the_learned_delay(reports: list[HoldReport], max_hold: float, delay: float) -> None:
    learned = learn(reports, hold(max_hold))
    assert learned == Learned(pytest.approx(delay), len(reports))  # type: ignore[arg-type]


def test_nothing_is_learned_from_no_report() -> None:
    assert learn([], hold(MAX_HOLD)) is None


def test_the_value_is_what_the_sidecar_reads_and_is_read_back() -> None:
    learned = Learned(2.5, 3)
    assert json.loads(learned_value(learned)) == {"version": 1, "pooledDelaySeconds": 2.5, "reports": 3}
    assert parse_learned(learned_value(learned)) == learned
    assert learned_data({"web": learned, "api": Learned(0.0, 1)}) == {
        "api": '{"version":1,"pooledDelaySeconds":0.0,"reports":1}',
        "web": '{"version":1,"pooledDelaySeconds":2.5,"reports":3}',
    }


def test_a_starting_budget_is_published_only_where_nothing_was_learned_and_never_read_back() -> None:
    data = learned_data({"web": Learned(2.5, 3, 45.0)}, {"web": 60.0, "api": 60.0})
    assert data == {
        "api": '{"version":1,"reports":0,"learnedMaxHoldSeconds":60.0}',
        "web": '{"version":1,"pooledDelaySeconds":2.5,"reports":3,"learnedMaxHoldSeconds":45.0}',
    }
    assert parse_learned(starting_value(60.0)) is None, "no report: a restarted leader learns nothing from it"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "not json",
        "[]",
        '{"version":2,"pooledDelaySeconds":1,"reports":1}',
        '{"version":1,"pooledDelaySeconds":-1,"reports":1}',
        '{"version":1,"pooledDelaySeconds":true,"reports":1}',
        '{"version":1,"pooledDelaySeconds":1,"reports":0}',
        '{"version":1,"pooledDelaySeconds":1}',
        '{"version":1,"pooledDelaySeconds":1,"reports":1,"x":"' + "x" * 300 + '"}',
    ],
)
def test_anything_else_read_back_is_no_history(value: object) -> None:
    assert parse_learned(value) is None


# ---- properties, over generated reports (Hypothesis; the "ci" profile in conftest.py) ----------

SECONDS = st.floats(0, 60)
REPORTS = st.builds(
    report,
    pooled=st.none() | SECONDS,
    lost=st.none() | st.just(0) | st.integers(1, 100),
    learned=st.none() | st.just(0.0) | st.floats(0, 40),
    stage2=st.none() | st.floats(0, 40),
    hold=SECONDS,
    stage1=st.none() | st.floats(0, 5),
    last_loss=st.none() | st.floats(0, 30),
)
RECENT = st.lists(REPORTS, min_size=1, max_size=20)
MAX_HOLDS = st.sampled_from([0.0, 1.0, 30.0, 600.0]) | st.floats(0, 600)


@given(RECENT, MAX_HOLDS)
def test_never_negative_never_above_max_hold_and_counts_its_reports(reports: list[HoldReport], max_hold: float) -> None:
    learned = learn(reports, hold(max_hold))
    assert learned is not None
    assert 0.0 <= learned.pooled_delay_seconds <= max_hold
    assert learned.reports == len(reports)
    assert parse_learned(learned_value(learned)) == learned


@given(RECENT, MAX_HOLDS, st.data())
def test_a_longer_quiet_never_lowers_it(reports: list[HoldReport], max_hold: float, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(reports) - 1))
    before = reports[index].pooled_quiet_seconds or 0.0
    longer = dataclasses.replace(reports[index], pooled_quiet_seconds=before + data.draw(st.floats(0, 30)))
    raised = [*reports[:index], longer, *reports[index + 1 :]]
    assert delay(raised, max_hold) >= delay(reports, max_hold)


@given(RECENT, MAX_HOLDS, st.data())
def test_a_loss_never_lowers_it(reports: list[HoldReport], max_hold: float, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(reports) - 1))
    lossy = dataclasses.replace(reports[index], lost_after_release=data.draw(st.integers(1, 1000)))
    with_loss = [*reports[:index], lossy, *reports[index + 1 :]]
    assert delay(with_loss, max_hold) >= delay(reports, max_hold)


@given(RECENT, MAX_HOLDS, st.data())
def test_a_later_loss_never_lowers_it(reports: list[HoldReport], max_hold: float, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(reports) - 1))
    before = reports[index].last_loss_seconds or 0.0
    later = dataclasses.replace(reports[index], last_loss_seconds=before + data.draw(st.floats(0, 30)))
    assert delay([*reports[:index], later, *reports[index + 1 :]], max_hold) >= delay(reports, max_hold)


@given(RECENT, MAX_HOLDS, st.floats(0, 40), st.integers(1, 50))
def test_a_loss_raises_it_above_what_the_hold_used_until_the_cap(
    reports: list[HoldReport], max_hold: float, used: float, lost: int
) -> None:
    learned = learn([*reports, report(learned=used, lost=lost)], hold(max_hold))
    assert learned is not None
    assert learned.pooled_delay_seconds >= min(max_hold, used + LOSS_STEP_SECONDS) - 1e-9


def delay(reports: list[HoldReport], max_hold: float) -> float:
    learned = learn(reports, hold(max_hold))
    assert learned is not None
    return learned.pooled_delay_seconds
