"""Faults and odd input on a real cluster: `onConflict: TakeOver` against the API server's own
managedFields, Deployments of odd shapes under a policy, and a burst of changes to overlapping
policies. Pods are not needed here: every Deployment has 0 replicas (their ReplicaSets and
generations are what is counted).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import pytest
from kubernetes import client, config

from harness.images import PAUSE_IMAGE
from harness.install import Operator, carries_lameduck, every_replica_injects
from harness.kube import Kube, wait_until
from harness.manifests import container, deployment, pause_deployment
from lameduck_operator.logic.decision import MAX_TEMPLATE_CONTAINERS
from lameduck_operator.logic.selection import NAMESPACE_NAME_LABEL
from lameduck_operator.names import (
    ADMITTED_ANNOTATION,
    ANNOTATIONS_MAX_BYTES,
    FIELD_MANAGER,
    GROUP,
    HOLD_PATH_PREFIX,
    PLURAL_CLUSTER,
    PLURAL_NAMESPACED,
    POLICY_ANNOTATION,
    SIDECAR_NAME,
    TAKEN_OVER_ANNOTATION,
    TAKEOVER_MANAGER,
    VERSION,
    SidecarEnv,
)
from lameduck_operator.settings import SidecarSettings
from tests.e2e.test_admission import replica_sets, revisioned, writers_view
from tests.e2e.test_operator import condition, policy, status

T = TypeVar("T")

# The port the chart's sidecar listens on and the app containers' preStop hooks call.
SIDECAR_PORT = SidecarSettings().port
# How the API server refuses a write whose annotations are over ANNOTATIONS_MAX_BYTES (a 422).
TOO_LONG = "metadata.annotations: Too long"
# Another team's field manager, applying server-side as GitOps tools and CI pipelines do.
TEAM = "team-x"
TEAMS_HOOK = {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}
TEAMS_START = {"exec": {"command": ["/bin/sh", "-c", "echo started"]}}
# Where the app container's preStop hook is: in the Deployment (as lameduck's records spell it),
# and in a managedFields entry's fieldsV1.
PRESTOP_PATH = ["spec", "template", "spec", "containers", ["name", "app"], "lifecycle", "preStop"]
PRESTOP_FIELDS = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"app"}', "f:lifecycle", "f:preStop")
# How long the policies' status and the Deployments must stay as they are to count as settled.
SETTLED_SECONDS = 3.0


def hold(container_name: str) -> dict[str, Any]:
    """The preStop hook lameduck gives an app container with the Sidecar method."""
    return {"httpGet": {"path": f"{HOLD_PATH_PREFIX}{container_name}", "port": SIDECAR_PORT, "scheme": "HTTP"}}


def sidecar_env(deployment_or_set: Mapping[str, Any]) -> dict[str, str] | None:
    """The injected sidecar's plain env values, None when the template has no sidecar."""
    spec = deployment_or_set["spec"]["template"]["spec"]
    for init in spec.get("initContainers") or []:
        if init["name"] == SIDECAR_NAME:
            return {e["name"]: e["value"] for e in init.get("env") or [] if "value" in e}
    return None


def restarts(operator: Operator) -> dict[str, int]:
    """Per operator pod not being deleted, how often its containers restarted."""
    return {
        p["metadata"]["name"]: sum(s.get("restartCount", 0) for s in p["status"].get("containerStatuses") or [])
        for p in operator.pods()
        if not p["metadata"].get("deletionTimestamp")
    }


def final(take: Callable[[], T], good: Callable[[T], bool], within: float, what: str) -> T:
    """take()'s answer once it is good, or its last answer after `within` seconds: for an assert
    that shows what was there rather than only that something never happened."""
    deadline = time.monotonic() + within

    def answer() -> tuple[T] | None:
        found = take()
        return (found,) if good(found) or time.monotonic() >= deadline else None

    (found,) = wait_until(answer, within + 60, what)
    return found


def settled(take: Callable[[], T], good: Callable[[T], bool], timeout: float, what: str) -> T:
    """take()'s answer once it is good and has not changed for SETTLED_SECONDS."""
    last: list[Any] = []
    since = time.monotonic()

    def steady() -> tuple[T] | None:
        nonlocal since
        now = take()
        if not last or now != last[0]:
            last[:] = [now]
            since = time.monotonic()
            return None
        return (now,) if good(now) and time.monotonic() - since >= SETTLED_SECONDS else None

    (found,) = wait_until(steady, timeout, f"{what}, unchanged for {SETTLED_SECONDS:.0f}s", interval=0.5)
    return found


# --- onConflict: TakeOver ---------------------------------------------------------------------------


def teams_deployment() -> dict[str, Any]:
    """What team-x applies: its own preStop hook on the app container, and more fields of its
    own around it (a postStart hook beside the preStop, env, an annotation, labels)."""
    app = container(
        "app",
        PAUSE_IMAGE,
        8080,
        imagePullPolicy="Never",
        env=[{"name": "MODE", "value": "prod"}],
        lifecycle={"preStop": TEAMS_HOOK, "postStart": TEAMS_START},
    )
    return deployment("web", [app], labels={"tier": "web"}, annotations={"team": "x"}, replicas=0)


def apply_as(kube: Kube, manager: str, manifest: dict[str, Any], namespace: str) -> None:
    kube.run(
        "apply", "--server-side", f"--field-manager={manager}", "-n", namespace, "-f", "-", input=json.dumps(manifest)
    )


def entries(deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["metadata"].get("managedFields") or [])


def fields_of(deployment: Mapping[str, Any], manager: str) -> list[dict[str, Any]]:
    return [
        e.get("fieldsV1") or {} for e in entries(deployment) if e["manager"] == manager and not e.get("subresource")
    ]


def node(fields: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for step in path:
        fields = fields[step]
    return fields


def owns(fields: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = fields
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return False
        node = node[step]
    return True


def without(fields: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A copy of fieldsV1 without what is at path, and without the nodes that leaves empty."""
    out: dict[str, Any] = copy.deepcopy(dict(fields))

    def drop(node: dict[str, Any], rest: tuple[str, ...]) -> None:
        if rest[0] not in node:
            return
        if len(rest) == 1:
            del node[rest[0]]
        else:
            drop(node[rest[0]], rest[1:])
            if not node[rest[0]]:
                del node[rest[0]]

    drop(out, path)
    return out


def teams_values(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The Deployment's values but lameduck's (its sidecar, grace period, annotations) and the app
    container's preStop hook, which TakeOver replaces; the API server's bookkeeping left out."""
    meta = deployment["metadata"]
    spec = copy.deepcopy(deployment["spec"])
    pod = spec["template"]["spec"]
    pod["initContainers"] = [c for c in pod.get("initContainers") or [] if c["name"] != SIDECAR_NAME] or None
    pod.pop("terminationGracePeriodSeconds", None)
    for app in pod["containers"]:
        app.get("lifecycle", {}).pop("preStop", None)
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(f"{GROUP}/") and k != "deployment.kubernetes.io/revision"
    }
    return {"labels": meta.get("labels"), "annotations": annotations, "spec": spec}


def delete_the_policy_until_web_is_reverted(kube: Kube, namespace: str) -> None:
    kube.run("delete", "gracefulpolicy", "web", "-n", namespace, "--timeout=60s")
    wait_until(
        lambda: (
            POLICY_ANNOTATION not in (kube.get("deployment", "web", namespace)["metadata"].get("annotations") or {})
        ),
        30,
        "web is reverted",
    )


def test_take_over_by_the_reconciler_moves_only_the_prestop_to_lameduck_and_revert_gives_the_deployment_back(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    apply_as(kube, TEAM, teams_deployment(), namespace)
    written = wait_until(lambda: revisioned(kube.get("deployment", "web", namespace)), 30, "web has its revision")
    (teams_fields,) = fields_of(written, TEAM)
    assert owns(teams_fields, PRESTOP_FIELDS), f"{TEAM} owns its preStop hook to begin with"

    kube.apply(
        policy("web", namespace, apply="Immediate", onConflict="TakeOver", selector={"matchLabels": {"tier": "web"}})
    )
    wait_until(
        lambda: status(kube, namespace, "web").get("compliant") == 1,
        60,
        "the policy reports web compliant (taken over)",
    )
    taken = kube.get("deployment", "web", namespace)
    app = taken["spec"]["template"]["spec"]["containers"][0]
    assert app["lifecycle"]["preStop"] == hold("app")
    assert app["lifecycle"]["postStart"] == TEAMS_START, "the hook beside it stays"
    assert carries_lameduck(taken)
    assert teams_values(taken) == teams_values(written), f"nothing else {TEAM} set changed"

    # Ownership: the preStop is lameduck's alone; team-x lost exactly it; nothing stray is left.
    ours = [e for e in entries(taken) if e["manager"] == FIELD_MANAGER]
    assert [(e["operation"], e.get("subresource")) for e in ours] == [("Apply", None)], "one lameduck entry"
    assert owns(ours[0]["fieldsV1"], PRESTOP_FIELDS)
    assert not [e for e in entries(taken) if e["manager"] == TAKEOVER_MANAGER], "the take-over's entry is gone"
    assert fields_of(taken, TEAM) == [without(teams_fields, PRESTOP_FIELDS)], f"{TEAM} lost only the preStop"
    strangers = [e["manager"] for e in entries(taken) if e["manager"] != FIELD_MANAGER]
    assert not [
        e["manager"]
        for e in entries(taken)
        if e["manager"] != FIELD_MANAGER and owns(e.get("fieldsV1") or {}, PRESTOP_FIELDS)
    ], f"of {strangers}, none owns the preStop any more"
    kinds = [(e["manager"], e["operation"], e.get("subresource")) for e in entries(taken)]
    assert len(kinds) == len(set(kinds)), f"an entry appears twice: {kinds}"
    assert all(e.get("fieldsV1") for e in entries(taken)), f"an entry owns nothing: {kinds}"
    # What revert gives back: the hook, and team-x's managedFields there.
    record = json.loads(taken["metadata"]["annotations"][TAKEN_OVER_ANNOTATION])
    owned = {"manager": TEAM, "operation": "Apply", "fieldsV1": node(teams_fields, PRESTOP_FIELDS)}
    assert record == [{"path": PRESTOP_PATH, "set": hold("app"), "was": TEAMS_HOOK, "owners": [owned]}]
    # One template change: the take-over's patch writes the whole intent, lameduck's apply then
    # changes no value; and judged again (its own write's event), web is written no more.
    sets = settled(lambda: len(replica_sets(kube, namespace, "web")), lambda n: n >= 2, 60, "web's ReplicaSets")
    assert sets == 2, "one new ReplicaSet for the take-over"
    assert kube.get("deployment", "web", namespace)["metadata"]["generation"] == taken["metadata"]["generation"]

    delete_the_policy_until_web_is_reverted(kube, namespace)
    # A revert may take several writes (fields recorded at admission, the writers' ownership,
    # fields applied: docs/admission.md): give the last its moment before comparing.
    reverted = final(
        lambda: writers_view(kube.get("deployment", "web", namespace)),
        lambda view: view == writers_view(written),
        15,
        "web is as team-x wrote it",
    )
    assert reverted == writers_view(written), "the revert gives back the Deployment team-x wrote, its hook included"
    # One template change, to the first template again: its ReplicaSet is taken up, none made.
    sets = settled(lambda: len(replica_sets(kube, namespace, "web")), lambda n: n >= 2, 30, "web's ReplicaSets")
    assert sets == 2, "no ReplicaSet for a template half reverted"


def test_take_over_at_admission_records_the_replaced_prestop_and_revert_puts_it_back(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    # As team-x writes it, and as the deployment controller then marks it: the reverted
    # Deployment is compared with both.
    apply_as(kube, TEAM, teams_deployment(), namespace)
    written = writers_view(
        wait_until(lambda: revisioned(kube.get("deployment", "web", namespace)), 30, "web has its revision")
    )
    kube.run("delete", "deployment", "web", "-n", namespace, "--wait=true")

    kube.apply(policy("web", namespace, onConflict="TakeOver", selector={"matchLabels": {"tier": "web"}}))
    every_replica_injects(kube, namespace, pause_deployment("probe", {"tier": "web"}, replicas=0))
    apply_as(kube, TEAM, teams_deployment(), namespace)
    taken = kube.get("deployment", "web", namespace)
    app = taken["spec"]["template"]["spec"]["containers"][0]
    assert app["lifecycle"] == {"preStop": hold("app"), "postStart": TEAMS_START}
    assert carries_lameduck(taken)
    record = json.loads(taken["metadata"]["annotations"][ADMITTED_ANNOTATION])
    assert [e for e in record if e["path"] == PRESTOP_PATH] == [
        {"path": PRESTOP_PATH, "set": hold("app"), "was": TEAMS_HOOK}
    ], "the replaced hook is recorded with what it was"
    assert not {e["manager"] for e in entries(taken)} & {FIELD_MANAGER, TAKEOVER_MANAGER}, "injected at admission"
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 30, "the policy reports web compliant")

    delete_the_policy_until_web_is_reverted(kube, namespace)
    reverted = final(
        lambda: writers_view(kube.get("deployment", "web", namespace)),
        lambda view: view == written,
        15,
        "web is as team-x wrote it, its ownership included",
    )
    assert reverted == written, "the revert puts team-x's hook back, and its ownership as it stood"


# --- odd Deployments under a policy -----------------------------------------------------------------


class Outcome(StrEnum):
    """What must become of an odd Deployment under the policy."""

    INJECTED = "injected"  # handled: every app container gets its hold, the sidecar is there
    CONFLICT = "conflict"  # left alone, and reported: status, an Event on it, kubectl's warning
    # lameduck's annotations would take it over the API server's limit: left alone (no write the
    # API server refuses, the writer's own neither), skipped, with an Event and kubectl's warning
    NO_ROOM = "no room"
    TOO_LARGE = "too large"  # more containers than lameduck judges: skipped, with an Event
    REFUSED = "refused"  # the API server refuses the writer's own write: nothing for lameduck to do


ODD = {"odd": "yes"}
ODD_POLICY = "odd"
# Room the near-the-limit Deployment leaves: what lameduck adds at admission to a one-container
# Deployment (its policy, intent and admitted-fields annotations: some 2.2 KiB, measured with
# `lameduck render`), the controller's revision annotation, and what a ReplicaSet adds to its
# Deployment's annotations, with room to spare.
NEAR_THE_LIMIT_ROOM = 4096
# Room enough for the writer and the deployment controller's revision annotation (34 bytes),
# not for lameduck's annotations (100 bytes or more: `lameduck.dev/policy` alone names the policy).
NO_ROOM = 64


def annotations_of(total: int) -> dict[str, str]:
    """One annotation whose key and value are `total` bytes together."""
    key = "example.com/filler"
    return {key: "x" * (total - len(key))}


def pause(name: str, *ports: int) -> dict[str, Any]:
    return container(name, PAUSE_IMAGE, *ports, imagePullPolicy="Never")


@dataclass(frozen=True)
class Odd:
    manifest: dict[str, Any]
    outcome: Outcome
    # What the report (a status message, an Event, kubectl's stderr) says.
    says: str = ""
    # INJECTED: the sidecar's LAMEDUCK_APP_PORTS (None: left out, as for no port at all).
    app_ports: str | None = None

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def odd(name: str, containers: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return deployment(name, containers, labels=ODD, replicas=0, **fields)


ODDS = [
    Odd(
        odd("fifty-containers", [pause(f"c{i:02d}", 10000 + i) for i in range(50)]),
        Outcome.INJECTED,
        app_ports=",".join(str(10000 + i) for i in range(50)),
    ),
    Odd(odd("no-ports", [pause("app")]), Outcome.INJECTED),
    Odd(
        odd(
            "near-the-limit",
            [pause("app", 8080)],
            annotations=annotations_of(ANNOTATIONS_MAX_BYTES - NEAR_THE_LIMIT_ROOM),
        ),
        Outcome.INJECTED,
        app_ports="8080",
    ),
    Odd(
        odd("no-room-for-lameduck", [pause("app", 8080)], annotations=annotations_of(ANNOTATIONS_MAX_BYTES - NO_ROOM)),
        Outcome.NO_ROOM,
        "no room for lameduck's annotations (",
    ),
    Odd(
        odd("over-the-limit", [pause("app", 8080)], annotations=annotations_of(ANNOTATIONS_MAX_BYTES + 1)),
        Outcome.REFUSED,
        TOO_LONG,
    ),
    Odd(
        odd("a-container-named-lameduck", [pause("app", 8080), pause(SIDECAR_NAME)]),
        Outcome.CONFLICT,
        f'a container named "{SIDECAR_NAME}" already exists and is not lameduck\'s sidecar',
    ),
    Odd(
        odd("init-on-the-sidecars-port", [pause("app", 8080)], initContainers=[pause("setup", SIDECAR_PORT)]),
        Outcome.CONFLICT,
        f'container "setup" already uses port {SIDECAR_PORT}, the sidecar\'s port',
    ),
    Odd(
        odd("more-than-lameduck-judges", [pause(f"c{i:03d}") for i in range(MAX_TEMPLATE_CONTAINERS + 1)]),
        Outcome.TOO_LARGE,
        f"{MAX_TEMPLATE_CONTAINERS + 1} containers, more than the {MAX_TEMPLATE_CONTAINERS} lameduck judges",
    ),
]


@dataclass(frozen=True)
class Seen:
    """One look at the test's namespace: the Deployments by name, the policy's status, the
    Events; and what kubectl said creating each odd Deployment, and whether they were created
    under the policy (so the webhook judged them) or before it."""

    namespace: str
    admitted: bool
    created: dict[str, tuple[int, str]]
    deployments: dict[str, dict[str, Any]]
    status: dict[str, Any]
    events: list[dict[str, Any]]

    def listed(self, name: str) -> list[dict[str, Any]]:
        """The policy's nonCompliant entries of the Deployment."""
        return [e for e in self.status.get("nonCompliant") or [] if e["name"] == name]

    def told(self, name: str, reason: str) -> list[tuple[str, str]]:
        """(type, message) of the Events of that reason on the Deployment."""
        return [
            (e["type"], e["message"])
            for e in self.events
            if e.get("reason") == reason
            and e["involvedObject"].get("kind") == "Deployment"
            and e["involvedObject"].get("name") == name
        ]


def create(kube: Kube, manifest: dict[str, Any], namespace: str) -> tuple[int, str]:
    """kubectl create (not apply: its last-applied annotation would double the annotations);
    its exit code and stderr, where kubectl prints the API server's warnings and refusals."""
    done = kube.run("create", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    return done.returncode, done.stderr


def injected_properly(case: Odd, stored: dict[str, Any], seen: Seen) -> list[str]:
    found = []
    containers = stored["spec"]["template"]["spec"]["containers"]
    wrong = [c["name"] for c in containers if (c.get("lifecycle") or {}).get("preStop") != hold(c["name"])]
    if wrong:
        found.append(f"{len(wrong)} of {len(containers)} containers lack their hold: {wrong[:5]}")
    env = sidecar_env(stored)
    if env is None:
        found.append("no sidecar")
    elif env.get(SidecarEnv.APP_PORTS) != case.app_ports:
        found.append(f"{SidecarEnv.APP_PORTS} is {env.get(SidecarEnv.APP_PORTS)!r}, not {case.app_ports!r}")
    if seen.listed(case.name):
        found.append(f"listed as not compliant: {seen.listed(case.name)}")
    return found


def reported_conflict(case: Odd, stored: dict[str, Any], seen: Seen) -> list[str]:
    found = []
    ref = f"GracefulPolicy {seen.namespace}/{ODD_POLICY}"
    listed = seen.listed(case.name)
    if not [
        e
        for e in listed
        if (e["state"], e["reason"]) == ("Conflict", "ConflictingFields") and case.says in e["message"]
    ]:
        found.append(f"not listed as ConflictingFields saying {case.says!r}: {listed}")
    told = seen.told(case.name, "Conflict")
    if (
        len(told) != 1
        or told[0][0] != "Warning"
        or not told[0][1].startswith(f"{ref}: ")
        or case.says not in told[0][1]
    ):
        found.append(f"not told once in a Conflict Event saying {case.says!r}: {told}")
    _, stderr = seen.created[case.name]
    if seen.admitted and not (f"lameduck: {ref} not applied: " in stderr and case.says in stderr):
        found.append(f"kubectl showed no warning saying {case.says!r}: {stderr.strip()[:300]!r}")
    return found


def reported_no_room(case: Odd, stored: dict[str, Any], seen: Seen) -> list[str]:
    found = []
    told = seen.told(case.name, "NoRoomForAnnotations")
    if len(told) != 1 or told[0][0] != "Warning" or not told[0][1].startswith(case.says):
        found.append(f"not told once in a NoRoomForAnnotations Event saying {case.says!r}: {told}")
    if seen.listed(case.name):
        found.append(f"listed as not compliant: {seen.listed(case.name)}")
    degraded = condition(seen.status, "Degraded")
    if f"{seen.namespace}/{case.name}: " in str(degraded.get("message", "")):
        found.append(f"a write of it was refused: {degraded}")
    _, stderr = seen.created[case.name]
    ref = f"GracefulPolicy {seen.namespace}/{ODD_POLICY}"
    if seen.admitted and f"lameduck: {ref} not applied: {case.says}" not in stderr:
        found.append(f"kubectl showed no warning saying {case.says!r}: {stderr.strip()[:300]!r}")
    return found


def reported_too_large(case: Odd, stored: dict[str, Any], seen: Seen) -> list[str]:
    told = seen.told(case.name, "TooLarge")
    return (
        [] if told == [("Warning", case.says)] else [f"not told once in a TooLarge Event saying {case.says!r}: {told}"]
    )


JUDGES: dict[Outcome, Callable[[Odd, dict[str, Any], Seen], list[str]]] = {
    Outcome.INJECTED: injected_properly,
    Outcome.CONFLICT: reported_conflict,
    Outcome.NO_ROOM: reported_no_room,
    Outcome.TOO_LARGE: reported_too_large,
}


def problems_of(case: Odd, seen: Seen) -> list[str]:
    """What is not as the case's outcome needs."""
    code, stderr = seen.created[case.name]
    if case.outcome is Outcome.REFUSED:
        refused = code != 0 and case.says in stderr
        return ([] if refused else [f"not refused with {case.says!r}: exit {code}, {stderr.strip()[:300]!r}"]) + (
            ["stored"] if case.name in seen.deployments else []
        )
    if code != 0:
        return [f"the writer's create was refused: {stderr.strip()[:500]!r}"]
    stored = seen.deployments.get(case.name)
    if stored is None:
        return ["not found"]
    left_alone = case.outcome is Outcome.INJECTED or not carries_lameduck(stored)
    return ([] if left_alone else ["injected"]) + JUDGES[case.outcome](case, stored, seen)


def counts_expected() -> dict[str, int]:
    """The policy's counts the table implies: injected ones compliant, conflicts conflicting, too
    large and no room skipped (not matched), none pending (no write is left to retry); refused
    ones were never stored."""
    outcomes = [case.outcome for case in ODDS]
    return {
        "matched": sum(o in (Outcome.INJECTED, Outcome.CONFLICT) for o in outcomes),
        "compliant": outcomes.count(Outcome.INJECTED),
        "pending": 0,
        "conflicting": outcomes.count(Outcome.CONFLICT),
        "skipped": sum(o in (Outcome.TOO_LARGE, Outcome.NO_ROOM) for o in outcomes),
    }


@pytest.mark.parametrize("admitted", [True, False], ids=["created-under-the-policy", "policy-applied-after"])
def test_odd_deployments_are_injected_or_reported_and_the_operator_keeps_serving(
    kube: Kube, operator: Operator, namespace: str, admitted: bool
) -> None:
    running = restarts(operator)
    odd_policy = policy(
        ODD_POLICY, namespace, apply="Immediate", maxConcurrentRollouts=20, selector={"matchLabels": ODD}
    )
    if admitted:
        kube.apply(odd_policy)
        every_replica_injects(kube, namespace, pause_deployment("probe", ODD, replicas=0))
    created = {case.name: create(kube, case.manifest, namespace) for case in ODDS}
    if not admitted:
        kube.apply(odd_policy)

    def problems() -> list[str]:
        seen = Seen(
            namespace,
            admitted,
            created,
            {d["metadata"]["name"]: d for d in kube.items("deployments", namespace)},
            status(kube, namespace, ODD_POLICY),
            kube.items("events", namespace),
        )
        found = [f"{case.name}: {p}" for case in ODDS for p in problems_of(case, seen)]
        counts = {key: seen.status.get(key) for key in counts_expected()}
        if counts != counts_expected():
            found.append(f"the policy counts {counts}, not {counts_expected()}")
        return found

    found = final(problems, lambda p: not p, 60, "every odd Deployment is injected or reported")
    assert not found, "\n".join(found)

    # Still serving: the webhook injects a plain Deployment created now, the reconciler judges it.
    every_replica_injects(kube, namespace, pause_deployment("probe", ODD, replicas=0))
    kube.apply(pause_deployment("after", ODD, replicas=0), namespace=namespace)
    assert carries_lameduck(kube.get("deployment", "after", namespace)), "injected at its creation"
    wait_until(
        lambda: status(kube, namespace, ODD_POLICY).get("compliant") == counts_expected()["compliant"] + 1,
        30,
        "the policy reports the plain Deployment compliant too",
    )
    assert operator.leader(), "an operator replica leads"
    after = restarts(operator)
    assert {name: after.get(name) for name in running} == running, "no operator container restarted or went"


# --- a burst of changes to overlapping policies -----------------------------------------------------

BURST_CHANGES = 50
BURST_SECONDS = 10.0
# The three policies over the same Deployments: a wins (namespaced, the higher priority); b loses
# to it on priority, the cluster policy on scope whatever its priority.
WINNER, LOSER, CLUSTER = "a", "b", "cluster"
POLICIES = (WINNER, LOSER, CLUSTER)
NO_CONFLICT = ("False", "NoConflicts")
LOST = ("True", "Overlap")
# The winner's values in the burst (every fifth change is the winner's, the others the losers'):
# each differs from the one before, so each change of the winner is effective.
WINNERS_DELAYS = ("1s", "2s", "3s", "4s")
FIRST_DELAY = "5s"
# A value no template had before: the change after the burst makes a ReplicaSet of its own.
AFTER_DELAY = "7s"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Change:
    policy: str
    delay: str


BURST = [
    Change(WINNER, WINNERS_DELAYS[(i // 5) % len(WINNERS_DELAYS)])
    if i % 5 == 0
    else Change(LOSER if i % 2 else CLUSTER, f"{1 + i % 4}s")
    for i in range(BURST_CHANGES)
]
WINNERS_LAST_DELAY = [c.delay for c in BURST if c.policy == WINNER][-1]


@dataclass(frozen=True)
class Look:
    """The three policies' status and what each Deployment carries, as compared between looks."""

    # Per policy: its conditions (type, status, reason, message), its counts (matched, compliant,
    # pending, conflicting) and the reasons it lists.
    statuses: dict[str, tuple[tuple[tuple[str, ...], ...], tuple[Any, ...], tuple[str, ...]]]
    # Per Deployment: its generation, the policy its annotation names, and the propagation delay
    # and policy its sidecar's env gives.
    deployments: dict[str, tuple[int, str | None, str | None, str | None]]

    def conflict(self, name: str) -> tuple[str, ...]:
        """The policy's Conflict condition's status and reason."""
        return next((c[1:3] for c in self.statuses[name][0] if c[0] == "Conflict"), ())

    def carrying(self, winner: str, delay: str | None) -> bool:
        """Every Deployment carries the winner's delay (None: nothing of lameduck's yet, so the
        winner lists each PendingNextRollout), the winner counts them so, and both losers report
        their loss."""
        values = (winner, delay, winner) if delay is not None else (None, None, None)
        counts = (3, 3, 0, 0) if delay is not None else (3, 0, 3, 0)
        listed = () if delay is not None else ("PendingNextRollout",) * 3
        return (
            all(d[1:] == values for d in self.deployments.values())
            and self.statuses[WINNER][1:] == (counts, listed)
            and self.conflict(WINNER) == NO_CONFLICT
            and self.conflict(LOSER) == self.conflict(CLUSTER) == LOST
        )


def conflict_of(found: Mapping[str, Any]) -> tuple[str, ...]:
    """A policy status's Conflict condition's status and reason."""
    conflict = condition(dict(found), "Conflict")
    return (conflict["status"], conflict["reason"]) if conflict else ()


def carried(deployment: Mapping[str, Any]) -> tuple[int, str | None, str | None, str | None]:
    env = sidecar_env(deployment) or {}
    annotations = deployment["metadata"].get("annotations") or {}
    return (
        int(deployment["metadata"]["generation"]),
        annotations.get(POLICY_ANNOTATION),
        env.get(SidecarEnv.PROPAGATION_DELAY),
        env.get(SidecarEnv.POLICY),
    )


class Overlapping:
    """The three policies through the API client (faster than kubectl: 50 changes in 10 s), and
    every look at their Conflict conditions taken while `recording`."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.cluster_name = f"{namespace}-cluster"
        self.api = client.CustomObjectsApi(config.new_client_from_config(config_file=kube.kubeconfig))
        self.recording = False
        self.conflicts: list[dict[str, tuple[str, ...]]] = []

    def manifests(self, apply: str) -> list[dict[str, Any]]:
        common: dict[str, Any] = {
            "apply": apply,
            "maxConcurrentRollouts": 10,
            "selector": {"matchLabels": {"tier": "web"}},
            "hold": {"propagationDelay": FIRST_DELAY},
        }
        in_the_namespace = {"matchLabels": {NAMESPACE_NAME_LABEL: self.namespace}}
        return [
            policy(WINNER, self.namespace, priority=10, **common),
            policy(LOSER, self.namespace, priority=0, **common),
            policy(self.cluster_name, None, priority=1000, namespaceSelector=in_the_namespace, **common),
        ]

    def status(self, name: str) -> dict[str, Any]:
        found: Any
        if name == CLUSTER:
            found = self.api.get_cluster_custom_object(GROUP, VERSION, PLURAL_CLUSTER, self.cluster_name)
        else:
            found = self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL_NAMESPACED, name)
        return dict(found.get("status") or {})

    def change(self, step: Change) -> None:
        body = {"spec": {"hold": {"propagationDelay": step.delay}}}
        if step.policy == CLUSTER:
            self.api.patch_cluster_custom_object(
                GROUP, VERSION, PLURAL_CLUSTER, self.cluster_name, body, _content_type=MERGE_PATCH
            )
        else:
            self.api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL_NAMESPACED, step.policy, body, _content_type=MERGE_PATCH
            )

    def look(self) -> Look:
        statuses = {name: self.status(name) for name in POLICIES}
        seen = Look(
            {
                name: (
                    tuple(
                        tuple(c[k] for k in ("type", "status", "reason", "message")) for c in s.get("conditions") or []
                    ),
                    tuple(s.get(key) for key in ("matched", "compliant", "pending", "conflicting")),
                    tuple(sorted(e["reason"] for e in s.get("nonCompliant") or [])),
                )
                for name, s in statuses.items()
            },
            {d["metadata"]["name"]: carried(d) for d in self.kube.items("deployments", self.namespace)},
        )
        if self.recording:
            self.conflicts.append({name: seen.conflict(name) for name in POLICIES})
        return seen

    def record_conflicts(self) -> None:
        """Only the Conflict conditions: quick enough between two changes of the burst."""
        self.conflicts.append({name: conflict_of(self.status(name)) for name in POLICIES})

    def settled(self, delay: str | None, what: str, timeout: float = 90) -> Look:
        """The look once every Deployment carries the winner's delay (Look.carrying) and nothing
        in it has changed for SETTLED_SECONDS."""
        winner = f"GracefulPolicy/{self.namespace}/{WINNER}"
        return settled(self.look, lambda seen: seen.carrying(winner, delay), timeout, what)


@pytest.mark.parametrize("apply", ["Immediate", "OnNextRollout"])
def test_fifty_changes_to_three_overlapping_policies_in_ten_seconds_write_each_template_once_per_effective_change(
    kube: Kube, operator: Operator, namespace: str, apply: str
) -> None:
    names = ("d0", "d1", "d2")
    manifests = []
    for name in names:
        manifest = pause_deployment(name, {"tier": "web"}, replicas=0)
        manifest["spec"]["revisionHistoryLimit"] = 100  # none pruned: ReplicaSets counted exactly
        manifests.append(manifest)
    kube.apply(*manifests, namespace=namespace)
    wait_until(
        lambda: all(len(replica_sets(kube, namespace, n)) == 1 for n in names), 30, "each has its first ReplicaSet"
    )
    policies = Overlapping(kube, namespace)
    # What a change of the winner's spec means: Immediate writes it to the templates now;
    # OnNextRollout writes nothing until the Deployments' next rollout.
    immediate = apply == "Immediate"
    try:
        for manifest in policies.manifests(apply):
            kube.apply(manifest)
        before = policies.settled(FIRST_DELAY if immediate else None, "the winner's values are in place")

        policies.recording = True
        started = time.monotonic()
        for i, step in enumerate(BURST):
            time.sleep(max(0.0, started + i * BURST_SECONDS / BURST_CHANGES - time.monotonic()))  # the burst's pace
            policies.change(step)
            policies.record_conflicts()
        took = time.monotonic() - started
        assert took <= BURST_SECONDS + 1, f"the {BURST_CHANGES} changes took {took:.1f}s"
        after = policies.settled(WINNERS_LAST_DELAY if immediate else None, "every status settled")
        policies.recording = False

        effective = sum(1 for c in BURST if c.policy == WINNER) if immediate else 0
        for name in names:
            writes = after.deployments[name][0] - before.deployments[name][0]
            assert writes <= effective, f"{name}: {writes} template writes for {effective} effective changes"
        expected = {WINNER: NO_CONFLICT, LOSER: LOST, CLUSTER: LOST}
        flapped = [seen for seen in policies.conflicts if seen != expected]
        assert not flapped, f"{len(flapped)} looks of {len(policies.conflicts)} saw other Conflicts: {flapped[:3]}"
        for name in (LOSER, CLUSTER):
            message = condition(policies.status(name), "Conflict")["message"]
            assert message.startswith(f"lost to GracefulPolicy {namespace}/{WINNER} on 3 Deployment(s)"), message

        # The effective change after the burst: exactly one new ReplicaSet each, with its values.
        sets = {name: len(replica_sets(kube, namespace, name)) for name in names}
        if immediate:
            policies.change(Change(WINNER, AFTER_DELAY))
        else:
            for name in names:
                kube.run("rollout", "restart", f"deployment/{name}", "-n", namespace)
        last_delay = AFTER_DELAY if immediate else WINNERS_LAST_DELAY
        done = policies.settled(last_delay, "the change after the burst is in place")
        for name in names:
            assert done.deployments[name][0] == after.deployments[name][0] + 1, f"{name}: one template write"
            now = replica_sets(kube, namespace, name)
            assert len(now) == sets[name] + 1, f"{name}: exactly one new ReplicaSet"
            newest = max(now, key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
            env = sidecar_env(newest) or {}
            assert (env.get(SidecarEnv.PROPAGATION_DELAY), env.get(SidecarEnv.POLICY)) == (
                last_delay,
                f"GracefulPolicy/{namespace}/{WINNER}",
            ), f"{name}: the new ReplicaSet carries the winner's last values"
    finally:
        kube.run("delete", "clustergracefulpolicy", policies.cluster_name, "--wait=false", check=False)
