"""The one decision about a Deployment: what it gets, why, and what to do about it now.

The reconciler, the admission webhook and the offline CLI all call `decide`; they differ
only in the moment they ask at (a reconcile, or an admitted write that is a rollout).
Each step computes once and hands its result on: select a policy, take the foreign view,
plan the intent (with conflicts named after their owners), judge it, then choose (a write
only when the annotations it leaves are within the API server's limit: logic/annotation_room).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.admitted import admitted, restore
from lameduck_operator.logic.annotation_room import (
    Room,
    after_apply,
    after_patch,
    annotations_of,
    annotations_size,
    patch_size_bound,
)
from lameduck_operator.logic.budget import BudgetSource, MaxHold, max_hold_for, max_hold_in_force
from lameduck_operator.logic.compliance import Reason, State, Verdict, check
from lameduck_operator.logic.intent import FieldPath, OwnersOf, Plan, carried_max_hold, plan_deployment, pod_spec
from lameduck_operator.logic.ownership import Ownership, write_times
from lameduck_operator.logic.selection import DeploymentRef, Loss, deployment_ref, select_policy
from lameduck_operator.logic.takeover import as_written
from lameduck_operator.model import ApplyStrategy, Mode, Policy, PolicyRef
from lameduck_operator.names import (
    ANNOTATIONS_MAX_BYTES,
    GROUP,
    INTENT_ANNOTATION,
    POLICY_ANNOTATION,
    SKIP_ANNOTATION,
)
from lameduck_operator.settings import Settings

# The most containers and init containers a pod template may have for lameduck to judge it.
# Each decision is linear in the template's size, but it runs on the webhook's one thread and
# the operator's one loop, where every other review and reconcile waits for it: the bound
# keeps one Deployment's decision to tens of milliseconds (measured: docs/admission.md).
MAX_TEMPLATE_CONTAINERS = 250
# lameduck's annotations, which a decision reads (skip, policy, intent, admitted).
ANNOTATION_PREFIX = f"{GROUP}/"


class Action(StrEnum):
    APPLY = "Apply"
    REVERT = "Revert"
    NONE = "None"


class Moment(StrEnum):
    """When the decision is asked for."""

    RECONCILE = "Reconcile"  # the operator's loop, and the offline CLI
    ADMISSION = "Admission"  # a Deployment write that starts a rollout (create, or a new template)


@dataclass(frozen=True)
class DeploymentEvent:
    """What to tell about a Deployment. With `policy`, what the policy did alike to many of its
    Deployments (injected, updated, reverted): told in one Event on that policy per burst, which
    lists them (logic/event_batches), and `message` is what was done, the words before the count
    ("injected the preStop hold, ..., into"). Without, a problem of this Deployment's own
    (a conflict, drift, a template too large, no room for lameduck's annotations) or a revert no
    policy claims: an Event on the Deployment, and `message` is the whole of it."""

    reason: str
    message: str
    warning: bool = False
    policy: PolicyRef | None = None


@dataclass(frozen=True)
class Decision:
    deployment: DeploymentRef
    action: Action
    verdict: Verdict
    losses: tuple[Loss, ...] = ()
    intent: dict[str, Any] | None = None
    plan: Plan | None = None
    starts_rollout: bool = False
    event: DeploymentEvent | None = None
    # With APPLY by a JSON patch (at admission, or of a Deployment whose fields were admitted):
    # the Deployment as the patch leaves it, which the patch is made from. Measured for room
    # before the write is chosen, so computed once.
    patched: dict[str, Any] | None = None
    # The maxHold in force for the Deployment (budget.max_hold_for): what its holds take as they
    # start and its next rollout's template carries; None: no policy governs it.
    max_hold: MaxHold | None = None

    @property
    def replaced(self) -> tuple[FieldPath, ...]:
        """The paths of other managers' values the apply takes over (logic/takeover.py)."""
        return self.plan.replaced if self.plan is not None and self.action is Action.APPLY else ()

    @property
    def budget_seconds(self) -> int | None:
        return self.plan.budget_seconds if self.plan is not None else None

    @property
    def budget_source(self) -> BudgetSource | None:
        """Under a policy with hold.learnedBudget: where that maxHold comes from."""
        return self.max_hold.source if self.max_hold is not None else None

    @property
    def starting_max_hold(self) -> float | None:
        """The starting budget, while it is where that maxHold comes from (no history, an L7 hop
        sends to the Deployment): published in lameduck-learned for holds to take as they start."""
        held = self.max_hold
        return held.seconds if held is not None and held.source is BudgetSource.L7_BACKEND else None


def intent_digest(intent: Mapping[str, Any]) -> str:
    """What lameduck sets, identity left out: a Deployment created with generateName has no name
    yet when the webhook computes it."""
    meta = {k: v for k, v in intent["metadata"].items() if k not in ("name", "namespace")}
    return hashlib.sha256(json.dumps({**intent, "metadata": meta}, sort_keys=True).encode()).hexdigest()[:16]


def with_digest(intent: Mapping[str, Any]) -> dict[str, Any]:
    """The intent, marked with its digest so a later change of intent is recognised."""
    digest = intent_digest(intent)
    meta = dict(intent["metadata"])
    meta["annotations"] = {**meta.get("annotations", {}), INTENT_ANNOTATION: digest}
    return {**intent, "metadata": meta}


def rollout_in_progress(deployment: Mapping[str, Any]) -> bool:
    """As `kubectl rollout status` judges it; a rollout past its deadline no longer counts, nor
    one the deployment controller has completed (its pods may be unavailable since, on a lost
    node: that is no rollout, and must not hold a slot or let an apply skip the limit)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    progressing: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return True
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    if updated < wanted or status.get("replicas", 0) > updated:
        return True
    return bool(status.get("availableReplicas", 0) < updated and progressing.get("reason") != "NewReplicaSetAvailable")


def _applied(deployment: Mapping[str, Any], ownership: Ownership) -> tuple[bool, str | None]:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    ours = ownership.managed() or POLICY_ANNOTATION in annotations
    return ours, annotations.get(INTENT_ANNOTATION)


def container_count(deployment: Mapping[str, Any]) -> int:
    """Containers and init containers of the pod template: what a decision's work grows with."""
    pod = pod_spec(deployment)
    return sum(len(items) for items in (pod.get("containers"), pod.get("initContainers")) if isinstance(items, list))


def too_large(deployment: Mapping[str, Any], max_containers: int | None = MAX_TEMPLATE_CONTAINERS) -> bool:
    return max_containers is not None and container_count(deployment) > max_containers


def lameduck_view(deployment: Mapping[str, Any], ownership: Ownership) -> Mapping[str, Any]:
    """The Deployment as the other managers set it: lameduck's own fields left out, both those it
    applied (managedFields, as `ownership` read them) and those it recorded as admitted, and the
    values it replaced (recorded as admitted or taken over) put back. Read only: without a record
    it shares values with `deployment` (copying it whole again took a quarter of a decision's time
    in bench.apply_path)."""
    recorded = admitted(deployment)
    view = ownership.foreign_view(deployment)
    return as_written(restore(view, recorded) if recorded else view, deployment, ownership)


def decide(
    deployment: Mapping[str, Any],
    policies: Iterable[Policy],
    settings: Settings,
    namespace_labels: Mapping[str, str] | None,
    rollouts_in_flight: Callable[[PolicyRef], int],
    *,
    moment: Moment = Moment.RECONCILE,
    recent_writers: Sequence[str] = (),
    max_containers: int | None = MAX_TEMPLATE_CONTAINERS,
    learned_max_hold: float | None = None,
    l7_backend: bool = False,
) -> Decision:
    """Select, plan, judge, and choose the one action for this Deployment now.

    recent_writers: the managers seen changing the Deployment since it was last judged.
    learned_max_hold: the maxHold learned for this Deployment (logic/learning), as the caller
    observed it; used only when the governing policy learns budgets, within its bounds. A
    Deployment that carries the rest of its intent with an earlier budget the policy allows keeps
    it until its next rollout (see _kept_budget): a learned value never starts a rollout.
    l7_backend: whether the caller saw an L7 hop send to the Deployment (logic/l7_backends);
    with no learned value under a policy that learns budgets, it starts at the starting budget
    (budget.max_hold_for), kept between rollouts as a learned value is.
    max_containers: a selected Deployment with more is skipped (Reason.TEMPLATE_TOO_LARGE)
    without planning; None lifts the bound (benchmarks).
    """
    ref = deployment_ref(deployment)
    selection = select_policy(deployment, policies, namespace_labels, settings.excluded_namespaces)
    ownership = Ownership.of(deployment)  # managedFields, read once for the whole decision
    ours, applied_digest = _applied(deployment, ownership)
    winner = selection.winner
    if winner is None or selection.opted_out:
        state, reason, why = (
            (State.SKIPPED, Reason.OPTED_OUT, f'opted out with {SKIP_ANNOTATION}: "true"')
            if selection.opted_out
            else (State.UNMANAGED, Reason.NO_POLICY, "no policy selects it")
        )
        verdict = Verdict(ref, winner.ref if winner else None, state, reason, why)
        if not ours or moment is Moment.ADMISSION:
            # Reverting is the reconciler's: at admission the write goes through as it is.
            return Decision(ref, Action.NONE, verdict, selection.losses)
        event = reverted_event(deployment, winner.ref if winner else None, why)
        return Decision(ref, Action.REVERT, verdict, selection.losses, starts_rollout=True, event=event)

    if too_large(deployment, max_containers):
        why = f"{container_count(deployment)} containers, more than the {max_containers} lameduck judges"
        verdict = Verdict(ref, winner.ref, State.SKIPPED, Reason.TEMPLATE_TOO_LARGE, why)
        return Decision(
            ref, Action.NONE, verdict, selection.losses, event=DeploymentEvent("TooLarge", why, warning=True)
        )

    spec = winner.spec
    view, owners = lameduck_view(deployment, ownership), ownership.owners()
    max_hold = max_hold_for(spec.hold, learned_max_hold, l7_backend)
    plan = plan_deployment(view, winner, settings, owners, max_hold=max_hold.seconds)
    verdict = check(deployment, plan)
    intent = with_digest(plan.intent)
    if moment is Moment.RECONCILE and spec.hold.learned_budget is not None:
        plan, verdict, intent = _kept_budget(
            deployment, view, winner, settings, owners=owners, learned=(plan, verdict, intent), applied=applied_digest
        )
    base = Decision(ref, Action.NONE, verdict, selection.losses, intent, plan, max_hold=max_hold)
    if spec.mode is Mode.AUDIT:
        return base
    if plan.conflicts:
        message = f"{winner.ref}: {verdict.message}"
        return replace(base, event=DeploymentEvent("Conflict", message, warning=True))
    digest = intent["metadata"]["annotations"][INTENT_ANNOTATION]
    if verdict.state is State.COMPLIANT and applied_digest == digest:
        return base
    # From here lameduck has fields to write, now or at the next rollout: only if they fit.
    if moment is Moment.ADMISSION:
        # The writer's object may carry no name yet (generateName) and its namespace comes from
        # the request: the patch never touches either.
        meta = {k: v for k, v in intent["metadata"].items() if k not in ("name", "namespace")}
        room, admitted_write = after_patch(deployment, {**intent, "metadata": meta})
        if not room.fits:
            return _no_room(base, room)
        # The write itself is the rollout: the intent rides along, for either apply strategy.
        return replace(base, action=Action.APPLY, patched=admitted_write)
    if spec.apply is ApplyStrategy.ON_NEXT_ROLLOUT:
        # Written at the next rollout's admission, by a JSON patch.
        room_then = _room_unless_it_fits(deployment, intent, by_patch=True)
        if room_then is not None:
            return _no_room(base, room_then)
        pending = Verdict(
            ref,
            winner.ref,
            State.PENDING,
            Reason.PENDING_NEXT_ROLLOUT,
            f"injected at the next rollout: {verdict.message or 'outdated'}",
            verdict.missing,
        )
        return replace(base, verdict=pending)

    # How the reconciler writes it (deployment_writes): by JSON patch when fields were admitted.
    by_patch = bool(admitted(deployment))
    starts_rollout = verdict.state is not State.COMPLIANT
    if starts_rollout and not rollout_in_progress(deployment):
        in_flight = rollouts_in_flight(winner.ref)
        if in_flight >= spec.max_concurrent_rollouts:
            room_then = _room_unless_it_fits(deployment, intent, by_patch=by_patch)
            if room_then is not None:
                return _no_room(base, room_then)
            waiting = Verdict(
                ref,
                winner.ref,
                State.PENDING,
                Reason.WAITING_TURN,
                f"waits its turn: {in_flight} of at most {spec.max_concurrent_rollouts} rollouts in progress",
                verdict.missing,
            )
            return replace(base, verdict=waiting)
    after: dict[str, Any] | None = None
    if by_patch:
        room, after = after_patch(deployment, intent)
    else:
        room = after_apply(deployment, intent)
    if not room.fits:
        return _no_room(base, room)

    if ours and applied_digest == digest:
        who = ", ".join(recent_writers) or ownership.latest_other() or "a client that left no managedFields entry"
        event = DeploymentEvent(
            "DriftRestored", f"{who} changed lameduck's fields ({'; '.join(verdict.missing)}); restored", warning=True
        )
    elif ours:
        event = DeploymentEvent("Updated", "updated lameduck's fields on", policy=winner.ref)
    else:
        done = f"injected the preStop hold, termination budget {plan.budget_seconds}s, into"
        event = DeploymentEvent("Injected", done, policy=winner.ref)
    return replace(base, action=Action.APPLY, starts_rollout=starts_rollout, event=event, patched=after)


def _room_unless_it_fits(deployment: Mapping[str, Any], intent: Mapping[str, Any], *, by_patch: bool) -> Room | None:
    """The annotations as lameduck's write would leave them, when over the limit; None when they
    fit. A write not chosen yet is measured exactly only when a cheap bound does not settle it."""
    if not by_patch:
        room = after_apply(deployment, intent)
    elif patch_size_bound(deployment, intent) <= ANNOTATIONS_MAX_BYTES:
        return None
    else:
        room, _ = after_patch(deployment, intent)
    return None if room.fits else room


def _no_room(base: Decision, room: Room) -> Decision:
    """Skipped: lameduck's write would take the annotations over the API server's limit, so the
    API server would refuse it (at admission, the writer's own write with it)."""
    verdict = base.verdict
    told = (
        f"no room for lameduck's annotations ({room.lameducks} bytes) within the {ANNOTATIONS_MAX_BYTES} bytes "
        "the API server allows a Deployment's annotations, keys and values together"
    )
    # The total stays out of the Event, which is told once per distinct message: the deployment
    # controller's revision annotation changes it at every rollout.
    why = f"{told}: they would be {room.total} bytes"
    skipped = Verdict(verdict.deployment, verdict.policy, State.SKIPPED, Reason.NO_ROOM_FOR_ANNOTATIONS, why)
    return replace(base, verdict=skipped, event=DeploymentEvent("NoRoomForAnnotations", told, warning=True))


Planned = tuple[Plan, Verdict, dict[str, Any]]


def _judged(deployment: Mapping[str, Any], plan: Plan) -> Planned:
    return plan, check(deployment, plan), with_digest(plan.intent)


def _carries(planned: Planned, applied_digest: str | None) -> bool:
    _, verdict, intent = planned
    return verdict.state is State.COMPLIANT and intent["metadata"]["annotations"][INTENT_ANNOTATION] == applied_digest


def _kept_budget(
    deployment: Mapping[str, Any],
    view: Mapping[str, Any],
    policy: Policy,
    settings: Settings,
    *,
    owners: OwnersOf,
    learned: Planned,
    applied: str | None,
) -> Planned:
    """Between rollouts, the budget the Deployment carries stands: when its template holds with
    another maxHold the policy allows (from an earlier learned or starting value) and carries every other
    field of its intent, as lameduck wrote it, it is judged by the intent with that maxHold, so a
    new learned value makes it neither Outdated nor rolled out; its next rollout's admission
    applies the new one. Otherwise (anything else to write, which rolls it out anyway) the
    learned intent stands."""
    carried = carried_max_hold(deployment)
    if _carries(learned, applied) or carried is None or max_hold_in_force(policy.spec.hold, carried) != carried:
        return learned
    kept = _judged(deployment, plan_deployment(view, policy, settings, owners, max_hold=carried))
    return kept if _carries(kept, applied) else learned


def reverted_event(deployment: Mapping[str, Any], selecting: PolicyRef | None, why: str) -> DeploymentEvent:
    """The revert told on the policy whose fields are removed (its annotation on the Deployment,
    else the policy it opted out of); on the Deployment when neither is known."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    policy = PolicyRef.from_annotation(annotations.get(POLICY_ANNOTATION)) or selecting
    if policy is None:
        return DeploymentEvent("Reverted", f"lameduck removed its fields: {why}")
    return DeploymentEvent("Reverted", f"removed lameduck's fields ({why}) from", policy=policy)


def after_write(decision: Decision, stored: Mapping[str, Any]) -> Decision | None:
    """The decision about the Deployment its write stored, without deciding again: an apply's
    verdict judged on the stored Deployment against the same plan (the write changed only
    lameduck's fields, which the plan leaves out), and nothing more to do. A revert's verdict
    stands as it is. None when the stored Deployment does not carry the intent (the API server or
    another writer changed what was written): then decide again."""
    if decision.action is not Action.APPLY:
        return decision
    if decision.plan is None or decision.intent is None:
        return None
    verdict = check(stored, decision.plan)
    annotations = (stored.get("metadata") or {}).get("annotations") or {}
    digest = decision.intent["metadata"]["annotations"][INTENT_ANNOTATION]
    if verdict.state is not State.COMPLIANT or annotations.get(INTENT_ANNOTATION) != digest:
        return None
    return replace(decision, action=Action.NONE, verdict=verdict, starts_rollout=False, event=None, patched=None)


def holds_through_status(decision: Decision) -> bool:
    """Whether the decision stays what it is while only the Deployment's status changes (see
    JudgedPart): any that writes nothing, but one waiting for a rollout slot (whether the
    Deployment's own rollout is in progress decides whether it waits)."""
    return decision.action is Action.NONE and decision.verdict.reason is not Reason.WAITING_TURN


@dataclass(frozen=True, slots=True)
class JudgedPart:
    """What a decision reads of a Deployment besides its status: which object at which spec
    (every change of the spec raises the generation), its labels, lameduck's annotations and the
    size of them all (whether lameduck's fit), and when each other manager last wrote its main
    resource (a write of the same values can still change who owns them). The deployment
    controller's status updates leave it as it was."""

    uid: str
    generation: int
    labels: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    annotations_size: int
    writes: tuple[tuple[str, str, str], ...]

    @classmethod
    def of(cls, deployment: Mapping[str, Any]) -> JudgedPart:
        meta = deployment.get("metadata") or {}
        annotations = annotations_of(deployment)
        lameducks = {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)}
        return cls(
            str(meta.get("uid") or ""),
            int(meta.get("generation") or 0),
            tuple(sorted((meta.get("labels") or {}).items())),
            tuple(sorted(lameducks.items())),
            annotations_size(annotations),
            tuple(sorted((name, operation, when) for (name, operation), when in write_times(deployment).items())),
        )


def revert_intent(deployment: Mapping[str, Any]) -> dict[str, Any]:
    """Applying this with lameduck's field manager removes every field only lameduck owns."""
    ref = deployment_ref(deployment)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ref.name, "namespace": ref.namespace},
    }
