"""The operator-to-sidecar contract: the env the operator injects is what the sidecar reads.

The operator writes the sidecar's environment (policy settings, probes, identity from the
downward API); the sidecar parses it. Each side is tested alone elsewhere; here the env of
a planned sidecar container is resolved the way kubelet would and loaded by the sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator import names as operator_names
from lameduck_operator.logic.intent import plan_deployment
from lameduck_operator.logic.learning import Learned, learned_data
from lameduck_operator.logic.shutdown import HoldOutcome, parse_hold_report
from lameduck_operator.model import PolicyRef
from lameduck_operator.names import REPORT_SELECTOR, SIDECAR_NAME
from lameduck_operator.settings import Settings, SidecarSettings
from lameduck_sidecar import names as sidecar_names
from lameduck_sidecar.after_release import AfterRelease
from lameduck_sidecar.config import load_config
from lameduck_sidecar.hold import HoldResult, Outcome
from lameduck_sidecar.lame_duck import LameDuckState, LameDuckTarget
from lameduck_sidecar.learned import deployment_name, learned_delay, learned_max_hold
from lameduck_sidecar.report import hold_report_event, report_message
from lameduck_sidecar.traffic import Probe
from tests.unit.builders import container, deployment, policy

# What kubelet resolves the downward-API references to, for one pod.
POD_FIELDS = {
    "metadata.name": "web-7d9f-abcde",
    "metadata.namespace": "shop",
    "metadata.uid": "0b1c2d3e",
    "status.podIP": "fd00:10:244::7",
    "status.hostIP": "192.0.2.7",
}
# Read by the sidecar but never set by the operator: kubelet's own, or test and tuning knobs.
SIDECAR_ONLY = {
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "LAMEDUCK_API_URL",
    "LAMEDUCK_API_TOKEN_FILE",
    "LAMEDUCK_API_CA_FILE",
    "LAMEDUCK_API_TIMEOUT",
    "LAMEDUCK_FALLBACK_DELAY",
    "LAMEDUCK_PROC_NET",
}


class RecordingEnv(Mapping[str, str]):
    """An environment that notes every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self.known = values
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.known[name]

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return self.known.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.known)

    def __len__(self) -> int:
        return len(self.known)


def injected_env(sidecar_container: dict[str, Any]) -> dict[str, str]:
    resolved = {}
    for item in sidecar_container["env"]:
        if "value" in item:
            resolved[item["name"]] = item["value"]
        else:
            resolved[item["name"]] = POD_FIELDS[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return resolved


@pytest.mark.parametrize("native", [True, False], ids=["native", "classic"])
def test_the_sidecar_reads_every_setting_the_operator_injects_as_meant(native: bool) -> None:
    settings = Settings(sidecar=SidecarSettings(native=native, port=9911))
    governing = policy(
        spec={
            "hold": {
                "propagationDelay": "1500ms",
                "quietPeriod": "3s",
                "maxHold": "1m30s",
                "lameDuck": {"port": 8080, "path": "/lame-duck?now=1"},
                "learnedBudget": {"maxHoldCap": "4m"},
            },
            "drainTimeout": "45s",
        }
    )
    app = container(
        "app",
        8080,
        8443,
        readinessProbe={"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 2},
        livenessProbe={"tcpSocket": {"port": 8443}},
    )
    plan = plan_deployment(deployment(containers=[app]), governing, settings)
    spec = plan.intent["spec"]["template"]["spec"]
    (sidecar,) = [c for c in spec["initContainers" if native else "containers"] if c["name"] == SIDECAR_NAME]
    values = injected_env(sidecar) | {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
    env = RecordingEnv(values)
    config = load_config(env)

    assert set(values) - SIDECAR_ONLY <= env.read, "the operator sets nothing the sidecar ignores"
    assert {n for n in env.read if n.startswith("LAMEDUCK_")} - SIDECAR_ONLY <= set(values), (
        "the sidecar reads nothing the operator forgot"
    )
    hold = config.hold
    assert (hold.propagation_delay, hold.quiet_period, hold.max_hold, hold.drain_timeout) == (1.5, 3.0, 90.0, 45.0)
    assert hold.max_hold_cap == 240.0
    assert config.lame_duck == LameDuckTarget(8080, "/lame-duck?now=1")
    assert config.probes == (Probe(8080, 2.0), Probe(8443, 10.0))
    assert config.app_ports == frozenset({8080, 8443})
    assert config.port == 9911
    assert config.native is native
    assert config.policy == governing.ref.annotation_value
    assert (config.pod_name, config.namespace, config.pod_uid) == ("web-7d9f-abcde", "shop", "0b1c2d3e")
    assert (config.pod_ip, config.host_ip) == ("fd00:10:244::7", "192.0.2.7")
    assert config.api_url == "https://[fd00:10:96::1]:443"
    hooks = {c["name"]: c["lifecycle"]["preStop"]["httpGet"] for c in spec["containers"] if "lifecycle" in c}
    assert hooks["app"] == {"path": "/hold/app", "port": config.port, "scheme": "HTTP"}, "the hook calls its port"


def test_settings_with_nothing_to_say_are_left_out_as_the_api_server_would_store_them() -> None:
    """An env value of "" is stored as no value: the intent must not carry one, or the stored
    sidecar would never match it. The sidecar reads a missing entry as empty."""
    plan = plan_deployment(deployment(containers=[container("worker")]), policy(), Settings())
    (sidecar,) = plan.intent["spec"]["template"]["spec"]["initContainers"]
    names = {e["name"] for e in sidecar["env"]}
    assert all(e.get("value") != "" for e in sidecar["env"])
    assert {"LAMEDUCK_APP_PORTS", "LAMEDUCK_PROBES"}.isdisjoint(names)
    config = load_config(injected_env(sidecar))
    assert (config.app_ports, config.probes) == (frozenset(), ())


def test_the_hold_report_the_sidecar_posts_is_the_one_the_operator_reads() -> None:
    """The other direction: the sidecar's hold report Event, parsed by the operator."""
    policy_ref = PolicyRef("GracefulPolicy", "web", "shop")
    result = HoldResult(Outcome.TIMEOUT, 30.0, 1.25, 28.75, 3, 2, 1, late_traffic=29.5)
    pod = {
        "metadata": {
            "labels": {"pod-template-hash": "7d9f"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f"}],
        }
    }
    message = report_message(
        result, policy=policy_ref.annotation_value, max_hold=30.0, grace_period=65.0, pod=pod, containers=["app"]
    )
    event = hold_report_event(
        message, namespace="shop", pod_name="web-7d9f-abcde", pod_uid="u1", now=datetime(2026, 11, 21, tzinfo=UTC)
    )
    key, value = REPORT_SELECTOR.split("=")
    assert event["metadata"]["labels"][key] == value, "the operator's watch selects what the sidecar labels"
    event["metadata"]["uid"] = "e1"  # given by the API server
    read = parse_hold_report(event)
    assert (read.namespace, read.pod, read.pod_uid, read.deployment, read.policy) == (
        "shop",
        "web-7d9f-abcde",
        "u1",
        "web",
        policy_ref,
    )
    assert read.outcome is HoldOutcome(result.outcome.value)
    assert {o.value for o in Outcome} - {"not_deleting"} == {o.value for o in HoldOutcome}
    assert (read.hold_seconds, read.stage1_seconds, read.stage2_seconds, read.late_traffic_seconds) == (
        30.0,
        1.25,
        28.75,
        29.5,
    )
    assert (read.max_hold_seconds, read.grace_period_seconds) == (30.0, 65.0)


def test_both_names_modules_agree_on_the_contract() -> None:
    """Each side defines its half once (lameduck_operator.names, lameduck_sidecar.names); here they meet."""
    written = {v for k, v in vars(operator_names.SidecarEnv).items() if k.isupper()}
    read = {v for k, v in vars(sidecar_names.Env).items() if k.isupper()}
    assert written <= read, f"the operator sets what the sidecar never reads: {sorted(written - read)}"
    assert read - written == SIDECAR_ONLY, "only kubelet's and tuning knobs differ"
    assert (operator_names.REPORT_LABEL, operator_names.REPORT_VALUE, operator_names.REPORT_VERSION) == (
        sidecar_names.REPORT_LABEL,
        sidecar_names.REPORT_VALUE,
        sidecar_names.REPORT_VERSION,
    )
    assert sidecar_names.HOLD_ROUTE == operator_names.HOLD_PATH_PREFIX + "{container}"


def test_both_names_modules_agree_on_what_is_learned_and_the_report_fields_after_release() -> None:
    assert (operator_names.LEARNED_CONFIGMAP, operator_names.LEARNED_VERSION) == (
        sidecar_names.LEARNED_CONFIGMAP,
        sidecar_names.LEARNED_VERSION,
    )
    for operator_side, sidecar_side in (
        (operator_names.LearnedField, sidecar_names.LearnedField),
        (operator_names.ReportField, sidecar_names.ReportField),
    ):
        written = {k: v for k, v in vars(operator_side).items() if k.isupper()}
        read = {k: v for k, v in vars(sidecar_side).items() if k.isupper()}
        assert written == read


def test_the_sidecar_reads_a_learned_value_written_by_the_operators_names() -> None:
    """The value the operator will write for a Deployment, spelled with its names, read by the sidecar."""
    value = {
        operator_names.LearnedField.VERSION: operator_names.LEARNED_VERSION,
        operator_names.LearnedField.POOLED_DELAY_SECONDS: 6.5,
        operator_names.LearnedField.REPORTS: 3,
    }
    config_map = {"metadata": {"name": operator_names.LEARNED_CONFIGMAP}, "data": {"web": json.dumps(value)}}
    pod = {
        "metadata": {
            "labels": {"pod-template-hash": "7d9f"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7d9f"}],
        }
    }
    assert learned_delay(config_map, deployment_name(pod)) == 6.5


def test_the_sidecar_reads_the_values_the_operator_publishes_as_meant() -> None:
    """lameduck-learned's data as the operator writes it (logic/learning.learned_data): a learned
    value and a starting budget, each read by the sidecar as the maxHold to take and, for the
    learned one only, a delay."""
    data = learned_data({"web": Learned(2.5, 3, 45.0)}, {"web": 90.0, "api": 60.0})
    config_map = {"metadata": {"name": operator_names.LEARNED_CONFIGMAP}, "data": data}
    assert (learned_max_hold(config_map, "web"), learned_delay(config_map, "web")) == (45.0, 2.5)
    assert (learned_max_hold(config_map, "api"), learned_delay(config_map, "api")) == (60.0, None)


def test_the_report_carries_every_field_measured_after_release() -> None:
    result = HoldResult(
        Outcome.QUIET,
        7.0,
        1.0,
        6.0,
        0,
        4,
        0,
        late_traffic=6.0,
        learned_delay=5.5,
        lame_duck=LameDuckState.ON,
        headless=True,
    )
    after = AfterRelease(lost=2, pooled_quiet=5.25, pinned_until_closed=1, app_exit=0.75, last_loss=0.5)
    message = report_message(result, policy="", max_hold=30.0, grace_period=None, pod=None, containers=[], after=after)
    fields = operator_names.ReportField
    assert {
        fields.LOST_AFTER_RELEASE: 2,
        fields.POOLED_QUIET_SECONDS: 5.25,
        fields.PINNED_UNTIL_CLOSED: 1,
        fields.LEARNED_DELAY_SECONDS: 5.5,
        fields.APP_EXIT_SECONDS: 0.75,
        fields.LAME_DUCK: operator_names.LameDuckReport.ON,
        fields.LAST_LOSS_SECONDS: 0.5,
        fields.HEADLESS_SERVICE: True,
    }.items() <= message.items()
    event = hold_report_event(
        message, namespace="shop", pod_name="p", pod_uid="u", now=datetime(2026, 1, 1, tzinfo=UTC)
    )
    event["metadata"]["uid"] = "e1"
    parsed = parse_hold_report(event)  # the operator reads the new fields as the sidecar meant them
    assert (parsed.lame_duck, parsed.last_loss_seconds, parsed.lost_after_release, parsed.headless) == (
        True,
        0.5,
        2,
        True,
    )


def test_a_policy_without_lame_duck_mode_injects_the_same_sidecar_as_before() -> None:
    """The lame-duck variable is added last and only when asked for, so the intent of every
    Deployment governed before the field existed is unchanged (no rollout from an upgrade)."""
    settings = Settings(sidecar=SidecarSettings(native=True, port=9911))
    plain = plan_deployment(deployment(containers=[container("app", 8080)]), policy(spec={}), settings)
    asked = plan_deployment(
        deployment(containers=[container("app", 8080)]),
        policy(spec={"hold": {"lameDuck": {"port": 8080, "path": "/lameduck"}}}),
        settings,
    )

    def env(plan: Any) -> list[dict[str, Any]]:
        (sidecar,) = [c for c in plan.intent["spec"]["template"]["spec"]["initContainers"] if c["name"] == SIDECAR_NAME]
        return list(sidecar["env"])

    assert env(asked) == [*env(plain), {"name": operator_names.SidecarEnv.LAME_DUCK, "value": "8080/lameduck"}]
