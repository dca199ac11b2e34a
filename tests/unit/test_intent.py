"""The intent lameduck owns in a Deployment: holds, sidecar, budget, gates, and conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from lameduck_operator.logic.budget import budget_seconds
from lameduck_operator.logic.intent import Plan, plan_deployment, probe_ports_and_periods
from lameduck_operator.model import parse_spec
from lameduck_operator.settings import Settings, SidecarSettings
from tests.unit.builders import container, deployment, policy

SETTINGS = Settings()
CLASSIC = Settings(sidecar=SidecarSettings(native=False))
HOLD_APP = {"httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}}


def pod(plan: Plan) -> dict[str, Any]:
    spec: dict[str, Any] = plan.intent["spec"]["template"]["spec"]
    return spec


def env(container_body: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_body["env"]}


@pytest.mark.parametrize(
    ("spec", "budget"),
    [
        ({}, 65),
        ({"hold": {"maxHold": "10s"}, "drainTimeout": "0s"}, 15),
        ({"hold": {"maxHold": "1.2s", "propagationDelay": "1s"}, "drainTimeout": "1s"}, 8),
        ({"hold": {"maxHold": "2m"}, "drainTimeout": "45s"}, 170),
        ({"terminationGracePeriodSeconds": 300}, 300),
        ({"hold": {"maxHold": "10m"}, "drainTimeout": "1h"}, 4205),
    ],
)
def test_budget(spec: dict[str, Any], budget: int) -> None:
    assert budget_seconds(parse_spec(spec, cluster=False)) == budget


def test_every_app_container_gets_its_own_hold() -> None:
    d = deployment(containers=[container("app", 8080), container("admin", 9090, 8080), container("worker")])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == ()
    assert plan.app_containers == ("app", "admin", "worker")
    assert [c["name"] for c in pod(plan)["containers"]] == ["app", "admin", "worker"]
    for c in pod(plan)["containers"]:
        assert c["lifecycle"]["preStop"]["httpGet"]["path"] == f"/hold/{c['name']}"
        assert set(c) == {"name", "lifecycle"}, "lameduck owns only the hold in app containers"
    sidecar = pod(plan)["initContainers"][0]
    assert env(sidecar)["LAMEDUCK_APP_PORTS"] == "8080,9090"


def test_named_containers_only() -> None:
    d = deployment(containers=[container("app", 8080), container("log-shipper", 24224)])
    plan = plan_deployment(d, policy(spec={"containers": ["app", "absent"]}), SETTINGS)
    assert plan.conflicts == ()
    assert plan.app_containers == ("app",)
    assert [c["name"] for c in pod(plan)["containers"]] == ["app"]
    assert env(pod(plan)["initContainers"][0])["LAMEDUCK_APP_PORTS"] == "8080"


def test_policy_naming_only_absent_containers_is_reported_not_applied() -> None:
    plan = plan_deployment(deployment(), policy(spec={"containers": ["web", "api"]}), SETTINGS)
    assert plan.conflicts == ("none of the containers named by the policy exist: web, api",)


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        ({"exec": {"command": ["sleep", "15"]}}, "exec"),
        ({"httpGet": {"path": "/shutdown", "port": 8080}}, "httpGet"),
        ({"httpGet": {"path": "/hold/app", "port": 8080}}, "httpGet"),
        ({"tcpSocket": {"port": 8080}}, "tcpSocket"),
        ({"sleep": {"seconds": 15}}, "sleep"),
    ],
)
def test_existing_prestop_of_any_kind_is_a_conflict(handler: dict[str, Any], kind: str) -> None:
    d = deployment(containers=[container("app", 8080, lifecycle={"preStop": handler})])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == (f'container "app" already has a preStop hook ({kind})',)
    taken = plan_deployment(d, policy(spec={"onConflict": "TakeOver"}), SETTINGS)
    assert taken.conflicts == ()
    assert taken.taken_over == (f'container "app" already has a preStop hook ({kind})',)
    assert pod(taken)["containers"][0]["lifecycle"]["preStop"] == HOLD_APP


@pytest.mark.parametrize(
    "handler",
    [
        HOLD_APP,
        {"httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}},
        {"httpGet": {"path": "/hold/old", "port": 9901}},
    ],
)
def test_lameduck_own_hold_is_no_conflict(handler: dict[str, Any]) -> None:
    d = deployment(containers=[container("app", lifecycle={"preStop": handler})])
    assert plan_deployment(d, policy(), SETTINGS).conflicts == ()


def test_other_lifecycle_hooks_stay_and_are_not_owned() -> None:
    d = deployment(containers=[container("app", lifecycle={"postStart": {"exec": {"command": ["true"]}}})])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == ()
    assert pod(plan)["containers"][0]["lifecycle"] == {"preStop": HOLD_APP}


@pytest.mark.parametrize(
    ("existing", "in_intent", "conflict"),
    [
        (None, 65, False),
        (30, 65, False),  # the API default counts as unset
        (20, 65, True),
        (64, 65, True),
        (65, None, False),
        (120, None, False),
    ],
)
def test_grace_period(existing: int | None, in_intent: int | None, conflict: bool) -> None:
    extra: dict[str, Any] = {} if existing is None else {"terminationGracePeriodSeconds": existing}
    d = deployment(**extra)
    plan = plan_deployment(d, policy(), SETTINGS)
    assert pod(plan).get("terminationGracePeriodSeconds") == in_intent
    reason = f"terminationGracePeriodSeconds is {existing}, below the budget of 65s"
    assert (reason in plan.conflicts) is conflict
    taken = plan_deployment(d, policy(spec={"onConflict": "TakeOver"}), SETTINGS)
    assert taken.conflicts == ()
    assert pod(taken).get("terminationGracePeriodSeconds") == in_intent


def test_explicit_grace_period_of_the_policy() -> None:
    plan = plan_deployment(deployment(), policy(spec={"terminationGracePeriodSeconds": 90}), SETTINGS)
    assert plan.budget_seconds == 90
    assert pod(plan)["terminationGracePeriodSeconds"] == 90


@pytest.mark.parametrize(
    ("existing_gates", "intent_gates", "conflict"),
    [
        (None, [{"conditionType": "lameduck.dev/endpoints-ready"}], False),
        ([{"conditionType": "lameduck.dev/endpoints-ready"}], None, False),
        (
            [{"conditionType": "example.com/lb-ready"}],
            [{"conditionType": "example.com/lb-ready"}, {"conditionType": "lameduck.dev/endpoints-ready"}],
            True,
        ),
    ],
)
def test_readiness_gate(existing_gates: Any, intent_gates: Any, conflict: bool) -> None:
    extra = {} if existing_gates is None else {"readinessGates": existing_gates}
    d = deployment(**extra)
    plan = plan_deployment(d, policy(spec={"readinessGate": {"enabled": True}}), SETTINGS)
    assert pod(plan).get("readinessGates") == intent_gates
    assert bool(plan.conflicts) is conflict
    assert plan.intent["spec"]["minReadySeconds"] == 2, "defaults to propagationDelay"
    taken = plan_deployment(d, policy(spec={"readinessGate": {"enabled": True}, "onConflict": "TakeOver"}), SETTINGS)
    assert taken.conflicts == ()
    assert pod(taken).get("readinessGates") == intent_gates, "other gates are kept when taking over"


def test_no_gate_and_no_min_ready_by_default() -> None:
    plan = plan_deployment(deployment(readinessGates=[{"conditionType": "x/y"}]), policy(), SETTINGS)
    assert "readinessGates" not in pod(plan)
    assert "minReadySeconds" not in plan.intent["spec"]
    assert plan.conflicts == ()


@pytest.mark.parametrize(
    ("spec", "existing", "in_intent", "conflict"),
    [
        ({"readinessGate": {"enabled": True}, "hold": {"propagationDelay": "2.5s"}}, None, 3, False),
        ({"minReadySeconds": 10}, None, 10, False),
        ({"minReadySeconds": 10}, 0, 10, False),
        ({"minReadySeconds": 10}, 5, 10, True),
        ({"minReadySeconds": 10}, 30, None, False),
    ],
)
def test_min_ready_seconds(spec: dict[str, Any], existing: int | None, in_intent: int | None, conflict: bool) -> None:
    d = deployment()
    if existing is not None:
        d["spec"]["minReadySeconds"] = existing
    plan = plan_deployment(d, policy(spec=spec), SETTINGS)
    assert plan.intent["spec"].get("minReadySeconds") == in_intent
    assert bool(plan.conflicts) is conflict


def test_native_sidecar_is_a_restartable_init_container_after_existing_ones() -> None:
    istio = container("istio-proxy", 15090, restartPolicy="Always")
    migrate = container("migrate")
    d = deployment(initContainers=[migrate, istio])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == ()
    assert plan.app_containers == ("app",), "native sidecars of others are not app containers"
    (sidecar,) = pod(plan)["initContainers"]
    assert sidecar["name"] == "lameduck"
    assert sidecar["restartPolicy"] == "Always"
    assert "lifecycle" not in sidecar


def test_sidecar_carries_policy_settings_identity_and_restricted_security() -> None:
    spec = {"hold": {"propagationDelay": "1500ms", "quietPeriod": "3s", "maxHold": "1m30s"}}
    plan = plan_deployment(deployment(), policy("web", "shop", spec), SETTINGS)
    (sidecar,) = pod(plan)["initContainers"]
    values = env(sidecar)
    assert values["LAMEDUCK_PROPAGATION_DELAY"] == "1.5s"
    assert values["LAMEDUCK_QUIET_PERIOD"] == "3s"
    assert values["LAMEDUCK_MAX_HOLD"] == "1m30s"
    assert values["LAMEDUCK_POLICY"] == "GracefulPolicy/shop/web"
    assert values["LAMEDUCK_POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert values["LAMEDUCK_POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sidecar["resources"]["limits"]["memory"] == "96Mi"


def named(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "containerPort": port}


@pytest.mark.parametrize(
    ("pod_spec", "probes"),
    [
        pytest.param(
            {"containers": [container("app", readinessProbe={"httpGet": {"port": 8080}, "periodSeconds": 2})]},
            [(8080, 2)],
            id="an httpGet probe connects to its port",
        ),
        pytest.param(
            {"containers": [container("app", livenessProbe={"tcpSocket": {"port": 8080}})]},
            [(8080, 10)],
            id="a tcpSocket probe without a period is probed every 10s",
        ),
        pytest.param(
            {"containers": [container("app", readinessProbe={"grpc": {"port": 9090}, "periodSeconds": 5})]},
            [(9090, 5)],
            id="a grpc probe connects to its port",
        ),
        pytest.param(
            {"containers": [container("app", livenessProbe={"exec": {"command": ["true"]}, "periodSeconds": 1})]},
            [],
            id="an exec probe opens no connection",
        ),
        pytest.param(
            {"containers": [container("app", readinessProbe={"httpGet": {"port": 8080, "host": "10.0.0.9"}})]},
            [],
            id="an httpGet probe with a host goes elsewhere",
        ),
        pytest.param(
            {"containers": [container("app", livenessProbe={"tcpSocket": {"port": 8080, "host": "db.example"}})]},
            [],
            id="a tcpSocket probe with a host goes elsewhere",
        ),
        pytest.param(
            {
                "containers": [
                    container(
                        "app",
                        ports=[named("metrics", 9100), named("http", 8080)],
                        readinessProbe={"httpGet": {"port": "http"}, "periodSeconds": 1},
                    )
                ]
            },
            [(8080, 1)],
            id="a named port resolves against the container's own ports",
        ),
        pytest.param(
            {
                "containers": [
                    container("app", readinessProbe={"httpGet": {"port": "http"}}),
                    container("web", ports=[named("http", 8080)]),
                ]
            },
            [],
            id="a named port the container does not declare is left out",
        ),
        pytest.param(
            {
                "containers": [
                    container(
                        "app",
                        readinessProbe={"httpGet": {"port": 8080}, "periodSeconds": 1},
                        livenessProbe={"httpGet": {"port": 8080}},
                    ),
                    container("admin", readinessProbe={"tcpSocket": {"port": 9090}, "periodSeconds": 5}),
                ]
            },
            [(8080, 1), (8080, 10), (9090, 5)],
            id="every probe of every container counts, sorted",
        ),
        pytest.param(
            {
                "containers": [container("app")],
                "initContainers": [
                    container("proxy", restartPolicy="Always", readinessProbe={"tcpSocket": {"port": 15021}}),
                    container("migrate", readinessProbe={"tcpSocket": {"port": 5432}}),
                ],
            },
            [(15021, 10)],
            id="another native sidecar's probes count, a run-once init container's do not",
        ),
        pytest.param(
            {
                "containers": [container("app")],
                "initContainers": [
                    container("lameduck", restartPolicy="Always", readinessProbe={"httpGet": {"port": 9901}})
                ],
            },
            [],
            id="lameduck's own sidecar is left out",
        ),
        pytest.param(
            {
                "containers": [
                    container("lameduck", readinessProbe={"httpGet": {"port": 9901}}),
                    container("app", readinessProbe={"httpGet": {"port": 8080}}),
                ],
            },
            [(8080, 10)],
            id="the containers after lameduck's classic sidecar count",
        ),
        pytest.param(
            {"containers": [container("app", startupProbe={"httpGet": {"port": 8080}, "periodSeconds": 1})]},
            [],
            id="a startup probe is left out",
        ),
    ],
)
def test_probes_that_connect_to_the_pod(pod_spec: dict[str, Any], probes: list[tuple[int, int]]) -> None:
    assert probe_ports_and_periods(pod_spec) == probes


def test_sidecar_is_told_the_probes_and_the_node_address() -> None:
    app = container(
        "app",
        8080,
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        livenessProbe={"tcpSocket": {"port": 8080}},
    )
    admin = container("admin", 9090, readinessProbe={"grpc": {"port": 9090}, "periodSeconds": 5})
    plan = plan_deployment(deployment(containers=[app, admin]), policy(spec={"containers": ["app"]}), SETTINGS)
    values = env(pod(plan)["initContainers"][0])
    assert values["LAMEDUCK_PROBES"] == "8080:1,8080:10,9090:5", "probes of containers without a hold count too"
    assert values["LAMEDUCK_HOST_IP"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.hostIP"}}
    unprobed = plan_deployment(deployment(), policy(), SETTINGS)
    assert "LAMEDUCK_PROBES" not in env(pod(unprobed)["initContainers"][0]), "stored as no value: left out"


def test_sidecar_env_keeps_its_order() -> None:
    probed = container("app", 8080, readinessProbe={"tcpSocket": {"port": 8080}})
    (sidecar,) = pod(plan_deployment(deployment(containers=[probed]), policy(), SETTINGS))["initContainers"]
    assert [e["name"] for e in sidecar["env"]] == [
        "LAMEDUCK_POD_NAME",
        "LAMEDUCK_POD_NAMESPACE",
        "LAMEDUCK_POD_UID",
        "LAMEDUCK_POD_IP",
        "LAMEDUCK_PORT",
        "LAMEDUCK_APP_PORTS",
        "LAMEDUCK_PROPAGATION_DELAY",
        "LAMEDUCK_QUIET_PERIOD",
        "LAMEDUCK_MAX_HOLD",
        "LAMEDUCK_DRAIN_TIMEOUT",
        "LAMEDUCK_POLICY",
        "LAMEDUCK_NATIVE",
        "LAMEDUCK_PROBES",
        "LAMEDUCK_HOST_IP",
    ]


HOST_NETWORK = (
    "the pod uses the host network: a sidecar there would see the node's connections and port, not the pod's; "
    "select it with a policy whose hold.method is Sleep"
)


@pytest.mark.parametrize(
    ("host_network", "spec", "conflicts"),
    [
        pytest.param(True, {}, (HOST_NETWORK,), id="a host-network pod gets no sidecar"),
        pytest.param(True, {"onConflict": "TakeOver"}, (HOST_NETWORK,), id="not even with TakeOver"),
        pytest.param(True, {"hold": {"method": "Sleep"}}, (), id="a host-network pod may sleep"),
        pytest.param(False, {}, (), id="hostNetwork false changes nothing"),
        pytest.param(None, {}, (), id="no hostNetwork changes nothing"),
    ],
)
def test_host_network_pods_hold_only_by_sleep(
    host_network: bool | None, spec: dict[str, Any], conflicts: tuple[str, ...]
) -> None:
    extra: dict[str, Any] = {} if host_network is None else {"hostNetwork": host_network}
    plan = plan_deployment(deployment(**extra), policy(spec=spec), SETTINGS)
    assert plan.conflicts == conflicts
    assert plan.taken_over == ()


def test_classic_sidecar_is_a_container_that_joins_the_hold() -> None:
    plan = plan_deployment(deployment(), policy(), CLASSIC)
    assert "initContainers" not in pod(plan)
    app, sidecar = pod(plan)["containers"]
    assert app == {"name": "app", "lifecycle": {"preStop": HOLD_APP}}
    assert sidecar["name"] == "lameduck"
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"]["preStop"]["httpGet"]["path"] == "/hold/lameduck"


def test_sleep_method_needs_no_sidecar() -> None:
    spec = {"hold": {"method": "Sleep", "maxHold": "19.5s"}, "drainTimeout": "10s"}
    plan = plan_deployment(deployment(), policy(spec=spec), SETTINGS)
    assert pod(plan)["containers"] == [{"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 20}}}}]
    assert "initContainers" not in pod(plan)
    assert pod(plan)["terminationGracePeriodSeconds"] == 35


@pytest.mark.parametrize("where", ["containers", "initContainers"])
def test_foreign_container_named_lameduck_always_blocks(where: str) -> None:
    foreign = container("lameduck", image="example.com/lameduck-bot:2")
    d = deployment(containers=[container("app"), foreign] if where == "containers" else None)
    if where == "initContainers":
        d["spec"]["template"]["spec"]["initContainers"] = [foreign]
    for on_conflict in ("Report", "TakeOver"):
        plan = plan_deployment(d, policy(spec={"onConflict": on_conflict}), SETTINGS)
        assert any('a container named "lameduck" already exists' in c for c in plan.conflicts)


def test_our_sidecar_of_another_version_is_no_conflict() -> None:
    ours = container("lameduck", image="lameduck/sidecar:0.0.9", restartPolicy="Always")
    d = deployment(initContainers=[ours])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == ()
    assert plan.app_containers == ("app",)


def test_sidecar_port_already_taken_blocks() -> None:
    d = deployment(containers=[container("app", 9901)])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == ('container "app" already uses port 9901, the sidecar\'s port',)
    sleep_plan = plan_deployment(d, policy(spec={"hold": {"method": "Sleep"}}), SETTINGS)
    assert sleep_plan.conflicts == (), "no sidecar, no port needed"


def test_intent_names_the_deployment_and_policy() -> None:
    plan = plan_deployment(deployment("api", "shop"), policy("web", None), SETTINGS)
    assert plan.intent["apiVersion"] == "apps/v1"
    assert plan.intent["kind"] == "Deployment"
    assert plan.intent["metadata"] == {
        "name": "api",
        "namespace": "shop",
        "annotations": {"lameduck.dev/policy": "ClusterGracefulPolicy/web"},
    }


def field(path: str) -> dict[str, Any]:
    return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}


def test_the_injected_native_sidecar_in_full() -> None:
    app = container("app", 8080, readinessProbe={"httpGet": {"port": 8080}, "periodSeconds": 2})
    (sidecar,) = pod(plan_deployment(deployment(containers=[app]), policy(), SETTINGS))["initContainers"]
    assert sidecar == {
        "name": "lameduck",
        "image": SETTINGS.sidecar.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "lameduck", "containerPort": 9901, "protocol": "TCP"}],
        "env": [
            {"name": "LAMEDUCK_POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "LAMEDUCK_POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
            {"name": "LAMEDUCK_POD_UID", "valueFrom": field("metadata.uid")},
            {"name": "LAMEDUCK_POD_IP", "valueFrom": field("status.podIP")},
            {"name": "LAMEDUCK_PORT", "value": "9901"},
            {"name": "LAMEDUCK_APP_PORTS", "value": "8080"},
            {"name": "LAMEDUCK_PROPAGATION_DELAY", "value": "2s"},
            {"name": "LAMEDUCK_QUIET_PERIOD", "value": "1s"},
            {"name": "LAMEDUCK_MAX_HOLD", "value": "30s"},
            {"name": "LAMEDUCK_DRAIN_TIMEOUT", "value": "30s"},
            {"name": "LAMEDUCK_POLICY", "value": "GracefulPolicy/shop/p"},
            {"name": "LAMEDUCK_NATIVE", "value": "true"},
            {"name": "LAMEDUCK_PROBES", "value": "8080:2"},
            {"name": "LAMEDUCK_HOST_IP", "valueFrom": field("status.hostIP")},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "96Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": 9901, "scheme": "HTTP"},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "restartPolicy": "Always",
    }


def test_the_sidecar_follows_the_operator_settings() -> None:
    settings = Settings(
        sidecar=SidecarSettings(
            image="registry.example/lameduck/sidecar:9",
            image_pull_policy="Always",
            port=7000,
            native=False,
            run_as_user=1000,
            cpu_request="20m",
            memory_request="64Mi",
        )
    )
    spec = {"drainTimeout": "45s"}
    _, sidecar = pod(plan_deployment(deployment(), policy(spec=spec), settings))["containers"]
    assert sidecar["image"] == "registry.example/lameduck/sidecar:9"
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["ports"] == [{"name": "lameduck", "containerPort": 7000, "protocol": "TCP"}]
    assert sidecar["readinessProbe"]["httpGet"]["port"] == 7000
    assert sidecar["resources"]["requests"] == {"cpu": "20m", "memory": "64Mi"}
    assert sidecar["securityContext"]["runAsUser"] == 1000
    values = env(sidecar)
    assert (values["LAMEDUCK_PORT"], values["LAMEDUCK_NATIVE"], values["LAMEDUCK_DRAIN_TIMEOUT"]) == (
        "7000",
        "false",
        "45s",
    )


def test_only_tcp_ports_of_the_app_containers_are_watched() -> None:
    app = container(
        "app",
        ports=[
            {"containerPort": 8080},
            {"containerPort": 8443, "protocol": "TCP"},
            {"containerPort": 5353, "protocol": "UDP"},
            {"containerPort": 3868, "protocol": "SCTP"},
            {"name": "no-port"},
        ],
    )
    plan = plan_deployment(deployment(containers=[app, container("worker", 9000)]), policy(), SETTINGS)
    assert env(pod(plan)["initContainers"][0])["LAMEDUCK_APP_PORTS"] == "8080,8443,9000"


def test_a_pod_template_with_only_a_sidecar_has_no_app_container() -> None:
    ours = container("lameduck", image="lameduck/sidecar:0.0.9")
    plan = plan_deployment(deployment(containers=[ours]), policy(), CLASSIC)
    assert plan.conflicts == ("the pod template has no app container",)


@pytest.mark.parametrize(
    ("image", "shown"), [("example.com/lameduck-bot:2", "example.com/lameduck-bot:2"), (None, "?")]
)
def test_a_foreign_container_named_lameduck_is_told_by_its_image(image: str | None, shown: str) -> None:
    foreign = {"name": "lameduck", **({"image": image} if image else {})}
    plan = plan_deployment(deployment(containers=[container("app"), foreign]), policy(), SETTINGS)
    assert plan.conflicts == (
        f'a container named "lameduck" already exists and is not lameduck\'s sidecar (image {shown})',
    )


def test_an_app_container_after_our_sidecar_on_the_sidecar_port_still_blocks() -> None:
    ours = container("lameduck", image="lameduck/sidecar:0.0.9")
    d = deployment(containers=[ours, container("app", 9901)])
    plan = plan_deployment(d, policy(), CLASSIC)
    assert plan.conflicts == ('container "app" already uses port 9901, the sidecar\'s port',)


def test_a_prestop_hook_of_no_known_kind_is_reported_as_unknown() -> None:
    d = deployment(containers=[container("app", lifecycle={"preStop": {"future": {}}})])
    plan = plan_deployment(d, policy(), SETTINGS)
    assert plan.conflicts == ('container "app" already has a preStop hook (unknown)',)
