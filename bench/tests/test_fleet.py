"""bench.fleet reads stalls by cause from the operator's metrics and shapes its fleet (replicas,
gated Deployments under a policy of their own, churn); bench.fleet_ab summarises its rounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from bench import fleet, fleet_ab, fleet_shape
from bench.fleet import stalls_by_cause
from lameduck_operator.names import READINESS_CONDITION


def test_stalls_are_read_by_cause_and_other_series_are_left_out() -> None:
    text = "\n".join(
        [
            "# HELP lameduck_event_loop_stalls_total Event loop stalls",
            'lameduck_event_loop_stalls_total{cause="gc"} 2.0',
            'lameduck_event_loop_stalls_total{cause="loop_busy"} 1.0',
            'lameduck_event_loop_stalls_created{cause="gc"} 1.7e+09',
            "lameduck_event_loop_lag_max_seconds 4.2",
        ]
    )
    assert stalls_by_cause(text) == {"gc": 2, "loop_busy": 1}


def test_an_operator_that_never_stalled_has_no_stalls() -> None:
    assert stalls_by_cause("lameduck_event_loop_lag_max_seconds 0.2\n") == {}


def test_the_ab_summary_keeps_each_round_and_the_median_per_build() -> None:
    def round_of(variant: str, rate: float) -> dict[str, float | str]:
        return {
            "variant": variant,
            "applies_per_second": rate,
            "cpu_ms_per_apply": 10.0,
            "peak_rss_mib": 150.0,
            "loop_lag_max_seconds": 0.5,
            "gc_seconds": 1.0,
            "install_to_audited_seconds": 20.0,
        }

    rounds = [round_of("before", 20), round_of("after", 40), round_of("after", 50), round_of("before", 30)]
    summary = fleet_ab.summary(rounds)
    assert summary["before"]["applies_per_second"] == {"each": [20, 30], "median": 25}
    assert summary["after"]["applies_per_second"] == {"each": [40, 50], "median": 45}


def test_the_ab_webhook_figures_read_the_share_the_api_server_saw_answered_within_100_ms() -> None:
    webhook = {
        "apiserver": {"calls": 500.0, "p50_ms": 60.0, "p99_ms": 420.0, "buckets": {"0.025": 100.0, "0.1": 450.0}},
        "client": {"p50_ms": 90.0, "p99_ms": 700.0},
        "operator": {"p99_ms": 9.5},
    }
    figures = fleet_ab.webhook_figures(webhook)
    assert figures["webhook_apiserver_within_100ms"] == 0.9
    assert (figures["webhook_apiserver_p99_ms"], figures["webhook_handler_p99_ms"]) == (420.0, 9.5)
    rounds = [{"variant": v, "applies_per_second": 1.0, **figures} for v in ("before", "after")]
    assert fleet_ab.summary(rounds)["after"]["webhook_apiserver_within_100ms"] == {"each": [0.9], "median": 0.9}


def test_each_variant_takes_its_turn_forwards_then_backwards() -> None:
    assert fleet_ab.round_order(["after", "plain"], 3) == ["after", "plain", "plain", "after", "after", "plain"]
    assert fleet_ab.round_order(["before", "after", "plain"], 2) == [
        "before",
        "after",
        "plain",
        "plain",
        "after",
        "before",
    ]


def test_the_operators_rate_is_read_against_the_plain_clients_of_the_same_round() -> None:
    rounds: list[dict[str, float | str]] = [
        {"variant": "after", "applies_per_second": 40.0},
        {"variant": "plain", "applies_per_second": 50.0},
        {"variant": "plain", "applies_per_second": 80.0},
        {"variant": "after", "applies_per_second": 60.0},
    ]
    summary = fleet_ab.summary(rounds)
    assert summary["plain"]["applies_per_second"] == {"each": [50.0, 80.0], "median": 65.0}
    assert summary["after"]["share_of_plain_client"] == {"each": [0.8, 0.75], "median": 0.775}
    assert "before" not in summary


# ---- the fleet's shape ---------------------------------------------------------------------


def test_a_share_of_gated_deployments_is_every_kth() -> None:
    assert [fleet_shape.gate_every(share) for share in (0, 0.1, 0.25, 0.33, 1)] == [0, 10, 4, 3, 1]
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError, match="from 0 to 1"):
            fleet_shape.gate_every(share)


def test_a_tenth_gated_are_a_tenth_of_the_fleet_and_none_of_the_opted_out() -> None:
    gated = [i for i in range(10_000) if fleet_shape.is_gated(i, 10)]
    assert len(gated) == 1000
    assert gated[:3] == [9, 19, 29]
    assert not [i for i in gated if i % fleet_shape.OPT_OUT_EVERY == 0]
    assert not [i for i in range(100) if fleet_shape.is_gated(i, 0)]


def test_the_default_fleet_expects_what_the_committed_runs_expected() -> None:
    # bench/results/fleet_1000.json and fleet_5000_*.json, from before the shape grew.
    assert fleet.expected(1000) == {"matched": 900, "skipped": 100, "conflicting": 128}
    assert fleet.expected(5000) == {"matched": 4500, "skipped": 500, "conflicting": 643}
    assert fleet.expected_by_policy(5000, 0) == {fleet.POLICY: fleet.expected(5000)}


def test_the_two_policies_split_the_fleet_between_them() -> None:
    want = fleet.expected_by_policy(10_000, 10)
    main, gated = want[fleet.POLICY], want[fleet.GATED_POLICY]
    whole = fleet.expected(10_000)
    assert {key: main[key] + gated[key] for key in whole} == whole
    # Gated are the last of each ten, never opted out; every seventh of them has its own preStop.
    assert gated == {"matched": 1000, "skipped": 0, "conflicting": sum(1 for i in range(9, 10_000, 10) if i % 7 == 0)}


def test_each_policy_must_be_counted_for_the_audit_to_be_complete() -> None:
    want = fleet.expected_by_policy(100, 10)

    def status(counts: dict[str, int]) -> dict[str, Any]:
        return {"generation": 1, "observedGeneration": 1, **counts}

    complete = {name: status(counts) for name, counts in want.items()}
    assert fleet.every_policy_audited(complete, want)
    assert not fleet.every_policy_audited({fleet.POLICY: complete[fleet.POLICY]}, want)
    behind = {**complete, fleet.GATED_POLICY: status({**want[fleet.GATED_POLICY], "matched": 0})}
    assert not fleet.every_policy_audited(behind, want)


def test_without_gated_deployments_the_fleet_has_todays_one_policy() -> None:
    assert fleet.policies("Enforce", "Immediate", 20, "31s") == [fleet.policy("Enforce", "Immediate", 20, "31s")]
    (only,) = fleet.policies("Audit", "OnNextRollout")
    assert only["metadata"]["name"] == fleet.POLICY
    assert only["spec"]["selector"] == {"matchLabels": fleet.LABEL}
    assert "readinessGate" not in only["spec"]


def test_the_gated_policy_turns_the_gate_on_for_the_gated_deployments_only() -> None:
    main, gated = fleet.policies("Enforce", "Immediate", 20, "31s", gate_every=10)
    assert main["metadata"]["name"] == fleet.POLICY
    assert main["spec"]["selector"]["matchExpressions"] == [{"key": fleet.GATE_LABEL, "operator": "DoesNotExist"}]
    assert "readinessGate" not in main["spec"]
    assert gated["metadata"]["name"] == fleet.GATED_POLICY
    assert gated["spec"]["selector"] == {"matchLabels": {**fleet.LABEL, fleet.GATE_LABEL: "yes"}}
    assert gated["spec"]["readinessGate"] == {"enabled": True}
    assert (main["spec"]["maxConcurrentRollouts"], gated["spec"]["maxConcurrentRollouts"]) == (18, 2)
    assert (main["spec"]["mode"], gated["spec"]["hold"]) == ("Enforce", {"maxHold": "31s"})


def test_the_fleets_rollout_limit_is_shared_in_proportion() -> None:
    assert fleet_shape.split_limit(1000, 10) == (900, 100)
    assert fleet_shape.split_limit(20, 10) == (18, 2)
    assert fleet_shape.split_limit(5, 10) == (4, 1)  # each policy takes at least one
    assert fleet_shape.split_limit(20, 0) == (20, 0)


def test_a_default_deployment_is_todays_and_a_shaped_one_has_its_replicas_and_gate() -> None:
    plain = fleet.fleet_deployment(9)
    assert plain["spec"]["replicas"] == 1
    assert plain["metadata"]["labels"] == fleet.LABEL
    assert "readinessGates" not in plain["spec"]["template"]["spec"]

    gated = fleet.fleet_deployment(9, replicas=3, gate_every=10)
    assert gated["spec"]["replicas"] == 3
    assert gated["metadata"]["labels"] == {**fleet.LABEL, fleet.GATE_LABEL: "yes"}
    assert gated["spec"]["template"]["spec"]["readinessGates"] == [{"conditionType": READINESS_CONDITION}]
    # Apart from those, the same Deployment.
    del gated["metadata"]["labels"][fleet.GATE_LABEL], gated["spec"]["template"]["spec"]["readinessGates"]
    assert {**gated, "spec": {**gated["spec"], "replicas": 1}} == plain

    ungated = fleet.fleet_deployment(8, replicas=3, gate_every=10)
    assert fleet.GATE_LABEL not in ungated["metadata"]["labels"]
    assert "readinessGates" not in ungated["spec"]["template"]["spec"]


def test_the_churn_deletes_at_a_steady_rate_and_catches_up_a_late_tick() -> None:
    # 10 % of 30,000 pods a minute: 50 a second.
    assert fleet_shape.pods_due(30_000, 0.1, 60) == 3000
    assert fleet_shape.pods_to_delete(30_000, 0.1, 1.0, 0) == 50
    assert fleet_shape.pods_to_delete(30_000, 0.1, 1.5, 50) == 25
    assert fleet_shape.pods_to_delete(30_000, 0.1, 4.0, 75) == 125  # a tick ran late
    assert fleet_shape.pods_to_delete(30_000, 0.1, 4.0, 200) == 0
    assert fleet_shape.pods_to_delete(30_000, 0, 600, 0) == 0


class FakePods:
    """Deployment i's pods by app label, those named in `terminating` being deleted already;
    deletions recorded, failing with a 404 for the names in `missing` (gone meanwhile)."""

    def __init__(self, n: int, replicas: int, *, terminating: frozenset[str] = frozenset()) -> None:
        self.pods: dict[str, list[dict[str, Any]]] = {}
        for i in range(n):
            names = [f"app-{i:05d}-{r}" for r in range(replicas)]
            self.pods[f"app=app-{i:05d}"] = [
                {
                    "metadata": {
                        "name": name,
                        **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if name in terminating else {}),
                    }
                }
                for name in names
            ]
        self.deleted: list[tuple[str, str]] = []
        self.missing: set[str] = set()

    def list(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        copy: list[dict[str, Any]] = json.loads(json.dumps(self.pods[selector]))  # fresh, as each list is
        return copy

    def delete(self, namespace: str, name: str) -> None:
        if name in self.missing:
            raise ApiException(status=404, reason="Not Found")
        self.deleted.append((namespace, name))


def churn_of(pods: FakePods, n: int, replicas: int, fraction: float) -> fleet.Churn:
    return fleet.Churn(
        pods.list, pods.delete, n=n, namespaces=5, pods=n * replicas, fraction_per_minute=fraction, seed=1
    )


def test_each_tick_deletes_the_pods_due_one_of_a_deployment_at_a_time() -> None:
    pods = FakePods(20, 3)
    churn = churn_of(pods, 20, 3, 0.5)  # 30 pods a minute
    assert churn.tick(10.0) == 5
    assert churn.tick(12.0) == 1
    assert len(pods.deleted) == churn.deleted == churn.picked == 6
    for namespace, name in pods.deleted:
        assert namespace == fleet.namespace_of(int(name.split("-")[1]), 5)
    assert churn.lap() == 6
    assert churn.tick(20.0) == 4
    assert churn.lap() == 4


def test_a_pod_already_terminating_is_never_picked() -> None:
    pods = FakePods(1, 2, terminating=frozenset({"app-00000-0"}))
    churn = churn_of(pods, 1, 2, 1.0)
    churn.delete_one((0, 0.0))
    assert pods.deleted == [(fleet.namespace_of(0, 5), "app-00000-1")]


def test_a_deployment_with_no_running_pod_and_a_failed_deletion_are_counted_and_the_churn_goes_on() -> None:
    pods = FakePods(3, 2, terminating=frozenset({"app-00000-0", "app-00000-1"}))
    pods.missing = {"app-00001-1"}
    churn = churn_of(pods, 3, 2, 1.0)
    churn.delete_one((0, 0.0))  # every pod terminating
    churn.delete_one((1, 0.9))  # the second by name, gone meanwhile
    churn.delete_one((2, 0.9))
    record = churn.record()
    assert pods.deleted == [(fleet.namespace_of(2, 5), "app-00002-1")]
    assert (record["no_running_pod"], record["errors"], record["deleted"]) == (1, {"404": 1}, 1)
    assert record["error_samples"][0].startswith("404")


def test_a_stopped_churn_deletes_nothing_more() -> None:
    pods = FakePods(10, 1)
    churn = churn_of(pods, 10, 1, 1.0).start()
    churn.stop()
    assert not churn.thread.is_alive()
    assert churn.tick(60.0) == 10  # picked, but not deleted: the churn has stopped
    assert pods.deleted == []
    assert churn.record()["deleted"] == 0


def test_the_fake_nodes_must_take_the_fleet_at_its_busiest() -> None:
    rolling = fleet_shape.rolling_at_once(1000, 500)
    assert rolling == 1500
    # Today's default: 5,000 Deployments of 1 on 100 nodes of 110 pods.
    assert fleet_shape.pods_at_most(5000, 1, rolling) == 6500
    assert fleet_shape.room_on_fake_nodes(6500, 100, 110) is None
    # 10,000 of 3: one surge pod each (25 % of 3, rounded up) for the 1,500 rolling at once.
    busiest = fleet_shape.pods_at_most(10_000, 3, rolling)
    assert busiest == 31_500
    assert "--pods-per-node" in str(fleet_shape.room_on_fake_nodes(busiest, 255, 110))
    assert fleet_shape.room_on_fake_nodes(busiest, 200, 200) is None


def test_the_bench_refuses_a_fleet_its_fake_nodes_cannot_take_before_touching_a_cluster(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        fleet.main(["--deployments", "10000", "--replicas", "3"])
    assert "31,500" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fleet.main(["--churn", "1.5"])


def test_the_setup_waits_longer_for_a_larger_fleet() -> None:
    assert fleet_shape.setup_timeout_seconds(5000) == 1800
    assert fleet_shape.setup_timeout_seconds(30_000) == 3000


def test_the_table_shows_the_shape_and_reads_older_results_as_todays() -> None:
    assert fleet.shape_cells({"deployments": 5000}) == "5,000 x 1 | 0 | none"
    shaped = {
        "deployments": 10_000,
        "replicas": 3,
        "gated_deployments": 1000,
        "churn_fraction_per_minute": 0.1,
        "churn": {"deleted": 12_345},
    }
    assert fleet.shape_cells(shaped) == "10,000 x 3 | 1,000 | 10%/min (12,345 deleted)"


def test_the_api_servers_time_on_each_operator_patch_is_read_from_the_audit_log(tmp_path: Path) -> None:
    def entry(user: str, verb: str, resource: str, received: str, done: str) -> str:
        received, done = f"2026-12-08T00:00:{received}Z", f"2026-12-08T00:00:{done}Z"
        return json.dumps(
            {
                "user": {"username": user},
                "verb": verb,
                "objectRef": {"resource": resource},
                "responseStatus": {"code": 200},
                "requestReceivedTimestamp": received,
                "stageTimestamp": done,
            }
        )

    log = tmp_path / "audit.log"
    log.write_text(
        "\n".join(
            [
                entry(fleet.OPERATOR_USER, "patch", "deployments", "00.000000", "00.040000"),
                entry(fleet.OPERATOR_USER, "patch", "deployments", "01.000000", "01.120000"),
                entry(fleet.OPERATOR_USER, "create", "events", "02.000000", "02.900000"),
                entry("system:serviceaccount:x:other", "patch", "deployments", "03.000000", "09.000000"),
            ]
        )
        + "\n"
    )
    got = fleet.api_requests(0, log)
    assert got["by_verb_resource"] == {"patch deployments": 2, "create events": 1}
    served = got["patch_deployments_server_ms"]
    assert (served["count"], served["min_ms"], served["max_ms"]) == (2, 40.0, 120.0)
    assert fleet_ab.server_time(got) == {"server_ms_per_write_p50": served["p50_ms"]}
    assert fleet_ab.server_time({"total": 0}) == {}


def test_the_plain_client_writes_the_deployments_the_policy_applies_to() -> None:
    want = fleet.expected(1000)
    targets = fleet.applied_by_the_policy(1000)
    assert len(targets) == want["matched"] - want["conflicting"] == 772
    assert not [i for i in targets if i % 10 == 0 or i % 7 == 0]
