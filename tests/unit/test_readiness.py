"""The readiness gate lameduck.dev/endpoints-ready: which condition a pod gets, from its Services' slices."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lameduck_operator.logic.readiness import (
    GateCondition,
    GateReason,
    PodView,
    gate_condition,
    listings,
    pod_view,
    service_view,
    slice_view,
)
from lameduck_operator.names import READINESS_CONDITION

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
POD_UID = "uid-web-1"
POD_IP = "10.0.0.7"
WEB = {"app": "web"}


def pod(
    *,
    gated: bool = True,
    labels: dict[str, str] | None = None,
    condition: tuple[str, str] | None = None,
    terminating: bool = False,
    ip: str | None = POD_IP,
    phase: str = "Running",
    namespace: str = "shop",
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": "web-1",
        "namespace": namespace,
        "uid": POD_UID,
        "labels": WEB if labels is None else labels,
        "resourceVersion": "42",
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "False"}]}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    if condition:
        status["conditions"].append({"type": READINESS_CONDITION, "status": condition[0], "reason": condition[1]})
    gates = [{"conditionType": "example.com/other"}] + ([{"conditionType": READINESS_CONDITION}] if gated else [])
    return {"metadata": meta, "spec": {"readinessGates": gates}, "status": status}


def service(name: str, selector: dict[str, str] | None = WEB, namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": [{"port": 80}], **spec}
    if selector is not None:
        body["selector"] = selector
    return {"metadata": {"name": name, "namespace": namespace}, "spec": body}


def endpoint(uid: str | None = POD_UID, ip: str = POD_IP, **conditions: bool) -> dict[str, Any]:
    listed: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if uid:
        listed["targetRef"] = {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": uid}
    return listed


def slice_of(service_name: str, *endpoints: dict[str, Any], namespace: str = "shop", name: str = "") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name or f"{service_name}-abcde",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": list(endpoints),
    }


def true(reason: GateReason, message: str, transition: bool = True) -> GateCondition:
    return GateCondition(True, reason, message, NOW if transition else None)


def false(message: str, transition: bool = True) -> GateCondition:
    return GateCondition(False, GateReason.NOT_LISTED, message, NOW if transition else None)


NOT_READY = endpoint(ready=False, serving=False, terminating=False)
NO_SERVICE = true(GateReason.NO_SERVICE, "no Service selects the pod")


@pytest.mark.parametrize(
    ("the_pod", "services", "slices", "expected"),
    [
        pytest.param(pod(), [], [], NO_SERVICE, id="a pod no Service selects is True with NoService"),
        pytest.param(
            pod(),
            [service("web")],
            [slice_of("web")],
            false("not listed yet by the EndpointSlices of Service web"),
            id="a selected pod not listed yet is False with NotListed",
        ),
        pytest.param(
            pod(),
            [service("web")],
            [],
            false("not listed yet by the EndpointSlices of Service web"),
            id="a selected pod whose Service has no slice yet is False with NotListed",
        ),
        pytest.param(
            pod(),
            [service("web"), service("web-admin")],
            [slice_of("web", NOT_READY), slice_of("web-admin")],
            false("not listed yet by the EndpointSlices of Service web-admin"),
            id="a pod listed by one of two Services is False naming the other",
        ),
        pytest.param(
            pod(),
            [service("web"), service("web-admin"), service("web-canary")],
            [slice_of("web")],
            false("not listed yet by the EndpointSlices of Services web, web-admin, web-canary"),
            id="a pod listed by none of three Services is False naming all three",
        ),
        pytest.param(
            pod(),
            [service("web"), service("web-admin")],
            [slice_of("web", NOT_READY), slice_of("web-admin", endpoint(ready=True))],
            true(GateReason.ENDPOINTS_LISTED, "listed by the EndpointSlices of Services web, web-admin"),
            id="a pod listed by every Service selecting it is True with EndpointsListed",
        ),
        pytest.param(
            pod(),
            [service("web")],
            [slice_of("web", name="web-1"), slice_of("web", NOT_READY, name="web-2")],
            true(GateReason.ENDPOINTS_LISTED, "listed by the EndpointSlices of Service web"),
            id="a pod listed in the second slice of its Service is True",
        ),
        pytest.param(
            pod(),
            [service("web")],
            [slice_of("web", endpoint(uid=None))],
            true(GateReason.ENDPOINTS_LISTED, "listed by the EndpointSlices of Service web"),
            id="a listing without targetRef counts by the pod's address",
        ),
        pytest.param(
            pod(),
            [service("web")],
            [slice_of("web", endpoint(ip="10.9.9.9"))],
            true(GateReason.ENDPOINTS_LISTED, "listed by the EndpointSlices of Service web"),
            id="a listing by uid counts even at another address",
        ),
        pytest.param(
            pod(ip=None),
            [service("web")],
            [slice_of("web", endpoint(uid="uid-other"))],
            false("not listed yet by the EndpointSlices of Service web"),
            id="a pod with no IP yet is not listed by another pod's listing",
        ),
        pytest.param(
            pod(terminating=True),
            [service("web")],
            [slice_of("web")],
            None,
            id="a terminating pod that is not True is never set False",
        ),
        pytest.param(
            pod(terminating=True, condition=("False", "NotListed")),
            [service("web")],
            [slice_of("web", endpoint(terminating=True))],
            None,
            id="a terminating pod gets no write at all, not even True",
        ),
        pytest.param(
            pod(condition=("True", "EndpointsListed")),
            [service("web")],
            [slice_of("web")],
            None,
            id="a True pod that stops being listed is not set back to False",
        ),
        pytest.param(
            pod(condition=("True", "NoService")),
            [service("web")],
            [],
            None,
            id="a True pod that a new Service selects is not set back to False",
        ),
        pytest.param(
            pod(condition=("True", "NoService")),
            [service("web")],
            [slice_of("web", NOT_READY)],
            true(GateReason.ENDPOINTS_LISTED, "listed by the EndpointSlices of Service web", transition=False),
            id="a True pod whose reason changes is written without a new transition time",
        ),
        pytest.param(
            pod(condition=("False", "NotListed")),
            [service("web")],
            [slice_of("web", NOT_READY)],
            true(GateReason.ENDPOINTS_LISTED, "listed by the EndpointSlices of Service web"),
            id="a False pod that gets listed turns True with a new transition time",
        ),
        pytest.param(
            pod(condition=("False", "NotListed")),
            [service("web"), service("web-admin")],
            [slice_of("web", NOT_READY)],
            None,
            id="a pod already carrying the same status and reason gets no write",
        ),
        pytest.param(
            pod(condition=("True", "NoService")),
            [],
            [],
            None,
            id="a pod already True with NoService gets no write",
        ),
        pytest.param(
            pod(condition=("True", "EndpointsListed")),
            [service("web")],
            [slice_of("web", NOT_READY)],
            None,
            id="a pod already True and listed gets no write",
        ),
        pytest.param(pod(gated=False), [], [], None, id="a pod without our gate gets nothing"),
        pytest.param(pod(phase="Succeeded"), [], [], None, id="a finished pod gets nothing"),
        pytest.param(
            pod(),
            [service("web", namespace="other")],
            [slice_of("web", namespace="other")],
            NO_SERVICE,
            id="a Service in another namespace is ignored",
        ),
        pytest.param(
            pod(),
            [service("api", selector={"app": "api"}), service("web", selector={"app": "web", "track": "canary"})],
            [slice_of("api"), slice_of("web")],
            NO_SERVICE,
            id="Services whose selectors do not match the pod are ignored",
        ),
        pytest.param(
            pod(),
            [service("external", selector=None), service("empty", selector={})],
            [slice_of("external"), slice_of("empty")],
            NO_SERVICE,
            id="Services without a selector are ignored",
        ),
        pytest.param(
            pod(),
            [service("db", type="ExternalName", externalName="db.example.com")],
            [],
            NO_SERVICE,
            id="an ExternalName Service is ignored",
        ),
        pytest.param(
            pod(),
            [service("web"), service("web-admin")],
            [slice_of("web-admin", NOT_READY)],
            false("not listed yet by the EndpointSlices of Service web"),
            id="the slices of another Service do not count",
        ),
        pytest.param(
            pod(),
            [service("web")],
            [slice_of("web", NOT_READY, namespace="other")],
            false("not listed yet by the EndpointSlices of Service web"),
            id="the slices of a same-named Service in another namespace do not count",
        ),
        pytest.param(
            pod(),
            [service("web")],
            [{**slice_of("web", NOT_READY), "metadata": {"name": "custom", "namespace": "shop"}}],
            false("not listed yet by the EndpointSlices of Service web"),
            id="a slice without the service-name label belongs to no Service",
        ),
    ],
)
def test_the_condition_a_pod_gets(
    the_pod: dict[str, Any],
    services: list[dict[str, Any]],
    slices: list[dict[str, Any]],
    expected: GateCondition | None,
) -> None:
    assert gate_condition(the_pod, services, slices, NOW) == expected


@pytest.mark.parametrize(
    "conditions",
    [
        pytest.param({}, id="none"),
        pytest.param({"ready": False}, id="not ready"),
        pytest.param({"ready": True}, id="ready"),
        pytest.param({"ready": False, "serving": True, "terminating": True}, id="serving and terminating"),
    ],
)
def test_a_listing_counts_whatever_its_conditions(conditions: dict[str, bool]) -> None:
    listing = endpoint()
    listing["conditions"] = conditions
    found = gate_condition(pod(), [service("web")], [slice_of("web", listing)], NOW)
    assert found is not None
    assert found.reason is GateReason.ENDPOINTS_LISTED


def test_the_condition_is_written_as_the_api_holds_it() -> None:
    written = gate_condition(pod(), [service("web")], [slice_of("web", NOT_READY)], NOW)
    assert written is not None
    assert written.as_api() == {
        "type": "lameduck.dev/endpoints-ready",
        "status": "True",
        "reason": "EndpointsListed",
        "message": "listed by the EndpointSlices of Service web",
        "lastTransitionTime": "2026-01-01T12:00:00Z",
    }
    same_status = gate_condition(pod(condition=("True", "NoService")), [service("web")], [slice_of("web")], NOW)
    assert same_status is None
    moved = gate_condition(pod(condition=("True", "NoService")), [service("web")], [slice_of("web", NOT_READY)], NOW)
    assert moved is not None
    assert "lastTransitionTime" not in moved.as_api(), "the status did not change: the pod's own time stays"


def test_the_pod_view_keeps_only_what_the_gate_needs() -> None:
    body = pod(condition=("False", "NotListed"), terminating=True)
    body["status"]["podIPs"].append({"ip": "fd00::7"})
    assert pod_view(body) == PodView(
        uid=POD_UID,
        name="web-1",
        namespace="shop",
        labels=WEB,
        ips=frozenset({POD_IP, "fd00::7"}),
        terminating=True,
        finished=False,
        gated=True,
        status="False",
        reason="NotListed",
        resource_version="42",
    )
    assert pod_view(pod(gated=False)).gated is False
    assert pod_view(pod(ip=None)).ips == frozenset()


def test_a_pod_view_differing_only_in_resource_version_is_the_same_for_the_gate() -> None:
    one = pod_view(pod())
    other = pod_view({**pod(), "metadata": {**pod()["metadata"], "resourceVersion": "43"}})
    assert one != other
    assert one.same_for_the_gate(other)
    assert not one.same_for_the_gate(pod_view(pod(labels={"app": "api"})))


def test_slices_are_grouped_by_namespace_and_service() -> None:
    views = [
        slice_view(slice_of("web", endpoint(), name="web-1")),
        slice_view(slice_of("web", endpoint(uid="u2", ip="10.0.0.8"), name="web-2")),
        slice_view(slice_of("web", endpoint(uid="u3", ip="10.1.0.1"), namespace="other")),
        slice_view({"metadata": {"name": "orphan", "namespace": "shop"}, "endpoints": [endpoint(uid="u4")]}),
    ]
    found = listings(views)
    assert set(found) == {("shop", "web"), ("other", "web")}
    assert found[("shop", "web")].uids == {POD_UID, "u2"}
    assert found[("shop", "web")].ips == {POD_IP, "10.0.0.8"}


def test_a_service_view_has_no_selector_for_external_names() -> None:
    assert service_view(service("web")).selector == WEB
    assert service_view(service("db", type="ExternalName")).selector == {}
    assert service_view(service("manual", selector=None)).selector == {}
