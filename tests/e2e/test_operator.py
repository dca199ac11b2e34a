"""The operator on a real cluster: apply, audit, revert, opt-out, drift, overlap, rollout limit."""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes import client, config, watch

from harness.images import PAUSE_IMAGE
from harness.install import Operator
from harness.kube import Kube, wait_until
from harness.manifests import pause_deployment as workload
from lameduck_operator.logic.decision import rollout_in_progress

HOLD = {"httpGet": {"path": "/hold/app", "port": 9901, "scheme": "HTTP"}}


def policy(name: str, namespace: str | None, **spec: Any) -> dict[str, Any]:
    kind = "GracefulPolicy" if namespace else "ClusterGracefulPolicy"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "lameduck.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def pod_spec(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = kube.get("deployment", name, ns)["spec"]["template"]["spec"]
    return spec


def has_hold(kube: Kube, ns: str, name: str) -> bool:
    containers = pod_spec(kube, ns, name)["containers"]
    return bool(containers[0].get("lifecycle", {}).get("preStop") == HOLD)


def status(kube: Kube, ns: str | None, name: str) -> dict[str, Any]:
    kind = "gracefulpolicy" if ns else "clustergracefulpolicy"
    found: dict[str, Any] = kube.get(kind, name, ns).get("status") or {}
    return found


def condition(found: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in found.get("conditions", []) if c["type"] == kind), {})


def events(kube: Kube, ns: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.items("events", ns) if e.get("reason") == reason]


def told(kube: Kube, ns: str, reason: str, policy_name: str) -> list[str]:
    """The Deployments the namespace's policy named its Events of that reason list, as often as
    listed (one Event per burst: "<what was done> 2 Deployments: a, b", with "and N more" past 20)."""
    return [
        name
        for e in events(kube, ns, reason)
        if e["involvedObject"]["kind"] == "GracefulPolicy" and e["involvedObject"]["name"] == policy_name
        for name in e["message"].rsplit(": ", 1)[1].split(" and ", 1)[0].split(", ")
    ]


def replica_sets(kube: Kube, ns: str, name: str) -> int:
    return len(kube.items("replicasets", ns, f"app={name}"))


def test_policy_injects_into_matching_deployments_only(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(workload("web", {"tier": "web"}), workload("db", {"tier": "db"}), namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate", selector={"matchLabels": {"tier": "web"}}))
    wait_until(lambda: has_hold(kube, namespace, "web"), 30, "web gets the hold")
    web = pod_spec(kube, namespace, "web")
    assert web["initContainers"][0]["name"] == "lameduck"
    assert web["initContainers"][0]["restartPolicy"] == "Always"
    assert web["terminationGracePeriodSeconds"] == 65
    db = pod_spec(kube, namespace, "db")
    assert "initContainers" not in db
    assert "lifecycle" not in db["containers"][0]
    found = wait_until(
        lambda: (s := status(kube, namespace, "web")).get("compliant") == 1 and s,
        30,
        "the policy reports web compliant",
    )
    assert (found["matched"], found["budgetSeconds"]) == (1, 65)
    assert condition(found, "Ready")["status"] == "True"
    # Told on the policy, once the burst is over (logic/event_batches.QUIET_SECONDS), not on web.
    injected = wait_until(lambda: events(kube, namespace, "Injected"), 30, "the policy's Injected Event")
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["message"]) for e in injected] == [
        ("GracefulPolicy", "web", "injected the preStop hold, termination budget 65s, into 1 Deployment: web")
    ]


def test_audit_reports_and_changes_nothing(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(workload("web"), namespace=namespace)
    before = kube.get("deployment", "web", namespace)
    kube.apply(policy("audit", namespace, mode="Audit", apply="Immediate"))
    found = wait_until(
        lambda: (s := status(kube, namespace, "audit")).get("matched") == 1 and s, 30, "the audit policy reports"
    )
    assert (found["pending"], found["compliant"]) == (1, 0)
    assert found["nonCompliant"][0]["name"] == "web"
    assert found["nonCompliant"][0]["reason"] == "Outdated"
    assert "lacks the lameduck preStop hold" in found["nonCompliant"][0]["message"]
    after = kube.get("deployment", "web", namespace)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert not any(e["manager"] == "lameduck" for e in after["metadata"]["managedFields"])


def test_deleting_the_policy_removes_only_lameducks_fields(kube: Kube, operator: Operator, namespace: str) -> None:
    original = workload("web", annotations={"team": "payments"})
    original["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "prod"}]
    kube.apply(original, namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate", minReadySeconds=2))
    wait_until(lambda: has_hold(kube, namespace, "web"), 30, "web gets the hold")
    assert kube.get("deployment", "web", namespace)["spec"]["minReadySeconds"] == 2
    kube.run("delete", "gracefulpolicy", "web", "-n", namespace, "--timeout=60s")
    wait_until(lambda: not has_hold(kube, namespace, "web"), 30, "the hold is removed")
    reverted = kube.get("deployment", "web", namespace)
    pod = reverted["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["terminationGracePeriodSeconds"] == 30, "back to the API default"
    assert reverted["spec"].get("minReadySeconds", 0) == 0
    assert pod["containers"][0]["env"] == [{"name": "MODE", "value": "prod"}]
    assert pod["containers"][0]["image"] == PAUSE_IMAGE
    assert reverted["metadata"]["annotations"]["team"] == "payments"
    assert not any(k.startswith("lameduck.dev/") for k in reverted["metadata"]["annotations"])
    managers = {e["manager"] for e in reverted["metadata"]["managedFields"]}
    assert "lameduck" not in managers
    assert "kubectl-client-side-apply" in managers
    wait_until(lambda: told(kube, namespace, "Reverted", "web") == ["web"], 30, "the policy's Reverted Event")


def test_opt_out_annotation_reverts(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(workload("web"), namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate"))
    wait_until(lambda: has_hold(kube, namespace, "web"), 30, "web gets the hold")
    kube.run("annotate", "deployment", "web", "-n", namespace, "lameduck.dev/skip=true")
    wait_until(lambda: not has_hold(kube, namespace, "web"), 30, "the opted-out Deployment is reverted")
    found = wait_until(
        lambda: (s := status(kube, namespace, "web")).get("skipped") == 1 and s, 30, "the policy counts it as skipped"
    )
    assert found["matched"] == 0


def test_a_write_that_drops_the_hold_gets_it_back_at_admission_with_no_new_rollout(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    kube.apply(workload("web"), namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate"))
    wait_until(lambda: has_hold(kube, namespace, "web"), 30, "web gets the hold")
    wait_until(lambda: not rollout_in_progress(kube.get("deployment", "web", namespace)), 60, "web has rolled out")
    sets_before = replica_sets(kube, namespace, "web")

    # A tool that replaces the whole object (as some GitOps tools do) drops lameduck's fields.
    def replace_without_hold() -> bool:
        """Read, drop the hold, replace; a conflict fails the replace, and it is tried again."""
        stored = kube.get("deployment", "web", namespace)
        del stored["spec"]["template"]["spec"]["containers"][0]["lifecycle"]
        del stored["metadata"]["managedFields"]
        kube.run("replace", "-f", "-", input=json.dumps(stored))
        return True

    wait_until(replace_without_hold, 30, "the Deployment is replaced without the hold")
    after = kube.get("deployment", "web", namespace)
    assert after["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"] == HOLD
    # (The generation still counts the write: the API server bumps it before admission runs.)
    assert replica_sets(kube, namespace, "web") == sets_before, "admitted with the hold: no new ReplicaSet"


def test_drift_is_restored_with_an_event(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(workload("web"), namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate", minReadySeconds=2))
    wait_until(lambda: kube.get("deployment", "web", namespace)["spec"].get("minReadySeconds") == 2, 30, "applied")
    # minReadySeconds is outside the pod template: a write to it alone never reaches the webhook.
    # Removed, as a tool that replaces the object without it does (a lower value set by someone
    # else would be theirs, and a conflict).
    remove = '[{"op": "remove", "path": "/spec/minReadySeconds"}]'
    kube.run("patch", "deployment", "web", "-n", namespace, "--type=json", "-p", remove)
    drift = wait_until(lambda: events(kube, namespace, "DriftRestored"), 30, "a DriftRestored event")
    assert kube.get("deployment", "web", namespace)["spec"]["minReadySeconds"] == 2
    assert drift[0]["type"] == "Warning"
    assert drift[0]["message"] == (
        "a client that left no managedFields entry changed lameduck's fields "
        "(minReadySeconds is unset, the policy needs 2); restored"
    )


def test_overlap_namespaced_policy_wins_and_the_loser_says_so(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(workload("web", {"tier": "web"}), namespace=namespace)
    cluster_name = f"{namespace}-base"
    kube.apply(
        policy(
            cluster_name,
            None,
            mode="Audit",
            priority=50,
            namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        )
    )
    try:
        kube.apply(policy("web", namespace, mode="Audit", selector={"matchLabels": {"tier": "web"}}))
        loser = wait_until(
            lambda: condition(s := status(kube, None, cluster_name), "Conflict").get("status") == "True" and s,
            30,
            "the cluster policy reports the overlap",
        )
        conflict = condition(loser, "Conflict")
        assert conflict["reason"] == "Overlap"
        assert f"lost to GracefulPolicy {namespace}/web on 1 Deployment(s) ({namespace}/web)" in conflict["message"]
        assert loser["matched"] == 0
        assert status(kube, namespace, "web")["matched"] == 1
    finally:
        kube.run("delete", "clustergracefulpolicy", cluster_name, "--wait=false", check=False)


def test_existing_prestop_is_reported_as_a_conflict_naming_its_manager(
    kube: Kube, operator: Operator, namespace: str
) -> None:
    legacy = workload("legacy")
    legacy["spec"]["template"]["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 5}}}
    kube.apply(legacy, namespace=namespace)
    kube.apply(policy("web", namespace, apply="Immediate"))
    found = wait_until(
        lambda: (s := status(kube, namespace, "web")).get("conflicting") == 1 and s, 30, "the conflict is reported"
    )
    assert found["nonCompliant"][0]["reason"] == "ConflictingFields"
    assert found["nonCompliant"][0]["message"] == (
        'container "app" already has a preStop hook (sleep), set by kubectl-client-side-apply'
    )
    assert condition(found, "Conflict")["reason"] == "DeploymentConflicts"
    assert pod_spec(kube, namespace, "legacy")["containers"][0]["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}


def test_reapplying_the_same_policy_makes_no_new_replicaset(kube: Kube, operator: Operator, namespace: str) -> None:
    kube.apply(workload("web"), namespace=namespace)
    web_policy = policy(
        "web", namespace, apply="Immediate", hold={"method": "Sleep", "maxHold": "2s"}, drainTimeout="1s"
    )
    kube.apply(web_policy)
    wait_until(lambda: status(kube, namespace, "web").get("compliant") == 1, 60, "web is compliant")
    wait_until(lambda: not rollout_in_progress(kube.get("deployment", "web", namespace)), 90, "the rollout ends")
    sets = replica_sets(kube, namespace, "web")
    generation = kube.get("deployment", "web", namespace)["metadata"]["generation"]
    kube.apply(web_policy)
    reconciled = operator.metric("lameduck_reconciles_total")
    # A label change makes the operator look at the Deployment again (an annotation
    # would bump the generation: Deployments copy annotations to their ReplicaSets).
    kube.run("label", "deployment", "web", "-n", namespace, "touched=1")
    wait_until(lambda: operator.metric("lameduck_reconciles_total") > reconciled, 30, "the operator reconciles web")
    assert kube.get("deployment", "web", namespace)["metadata"]["generation"] == generation
    assert replica_sets(kube, namespace, "web") == sets


def test_immediate_mode_never_rolls_more_than_the_limit(kube: Kube, operator: Operator, namespace: str) -> None:
    names = [f"app-{i:02d}" for i in range(10)]
    kube.apply(*(workload(n, {"fleet": "yes"}) for n in names), namespace=namespace)
    wait_until(
        lambda: (
            all(not rollout_in_progress(d) for d in kube.items("deployments", namespace))
            and len(kube.items("deployments", namespace)) == 10
        ),
        180,
        "the fleet is available",
    )

    api_client = config.new_client_from_config(config_file=kube.kubeconfig)
    apps = client.AppsV1Api(api_client)
    rolling: dict[str, bool] = {}
    most = 0
    stop = threading.Event()
    lock = threading.Lock()

    def observe() -> None:
        nonlocal most
        stream = watch.Watch()
        for event in stream.stream(apps.list_namespaced_deployment, namespace, timeout_seconds=240):
            body = event["raw_object"]
            with lock:
                rolling[body["metadata"]["name"]] = rollout_in_progress(body)
                most = max(most, sum(rolling.values()))
            if stop.is_set():
                stream.stop()

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    kube.apply(
        policy(
            "fleet",
            namespace,
            apply="Immediate",
            maxConcurrentRollouts=3,
            selector={"matchLabels": {"fleet": "yes"}},
            hold={"method": "Sleep", "maxHold": "1s", "propagationDelay": "0s", "quietPeriod": "0s"},
            drainTimeout="1s",
        )
    )
    wait_until(
        lambda: status(kube, namespace, "fleet").get("compliant") == 10,
        240,
        "all 10 Deployments are compliant",
        interval=1,
    )
    wait_until(
        lambda: all(not rollout_in_progress(d) for d in kube.items("deployments", namespace)),
        120,
        "every rollout ends",
        interval=1,
    )
    stop.set()
    kube.run("annotate", "deployment", names[0], "-n", namespace, "wake-watcher=1")
    watcher.join(timeout=30)
    assert 2 <= most <= 3, f"{most} Deployments rolled at once; the limit is 3"
