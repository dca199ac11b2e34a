"""bench.apply_path drives the operator's apply path offline: one small round counts what it claims."""

from __future__ import annotations

import gc

from bench import apply_path


async def test_a_round_counts_the_bursts_applies_and_their_api_calls_only() -> None:
    thresholds = gc.get_threshold()
    try:
        found = await apply_path.one_round(40, workers=2, profile=None, settle=0.1)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    # Of 40: every tenth opted out (4), every seventh of the rest has its own preStop (5).
    assert found["applies"] == 31
    assert found["api_calls"][apply_path.APPLIED] == 31, "the Audit phase's calls are not counted"
    # Each apply's watch events: its own write and three status updates of its rollout.
    assert found["watch_events_per_apply"] == 4.0
    # The apply's answer is stored whole; the three status updates keep only what they change.
    assert (found["stored_per_apply"], found["status_kept_per_apply"]) == (1.0, 3.0)
    assert found["cpu_ms_per_apply"] > 0
    assert found["events"] >= 1


def test_a_deployment_is_served_with_its_writers_managed_fields_keyed_as_the_api_server_keys_them() -> None:
    served = apply_path.served(1)
    assert served["metadata"]["generation"] == 1
    assert [e["manager"] for e in served["metadata"]["managedFields"]] == ["kubectl", "kube-controller-manager"]
    fields = apply_path.fields({"spec": {"template": {"spec": {"containers": [{"name": "c0", "image": "x"}]}}}})
    assert fields == {
        "f:spec": {
            "f:template": {"f:spec": {"f:containers": {'k:{"name":"c0"}': {".": {}, "f:name": {}, "f:image": {}}}}}
        }
    }


async def test_an_api_latency_holds_each_call_and_the_threads_waits_are_told() -> None:
    thresholds = gc.get_threshold()
    try:
        found = await apply_path.one_round(40, workers=2, profile=None, settle=0.1, latency=0.04)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert found["api_latency_ms"] == 40.0
    # Two workers, each apply waiting 40 ms for its answer, then the last rollout's steps.
    rollout = apply_path.CONTROLLER_STEPS * apply_path.CONTROLLER_STEP_SECONDS
    assert found["burst_seconds"] >= found["applies"] * 0.04 / 2 + rollout
    assert found["run_queue_wait_seconds"] is not None
    assert found["run_queue_wait_seconds"] >= 0
    assert 0 < found["loop_thread_busy_share"] <= 1.05
