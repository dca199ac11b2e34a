"""The writes that carry out a decision about one Deployment, each returning the Deployment as the
API server stored it.

Applying the intent takes one of three paths: a JSON patch of the fields recorded at admission
(the webhook injected them, so lameduck keeps to those), a take-over of other managers' preStop
hooks, or a server-side apply. Reverting removes lameduck's fields the same way they came, and
after a JSON patch restores the other writers' ownership as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lameduck_operator.logic.admitted import admitted_paths, json_patch, reverted
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Decision, revert_intent
from lameduck_operator.logic.ownership import managed_by, ownership_restore_patch
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.ports import FleetApi

log = logging.getLogger("lameduck.fleet")


class DeploymentWrites:
    def __init__(self, api: FleetApi) -> None:
        self.api = api

    async def carry_out(
        self, ref: DeploymentRef, body: Mapping[str, Any], decision: Decision
    ) -> tuple[Mapping[str, Any] | None, str]:
        """Write what the decision calls for on body, the Deployment as last read: the Deployment
        as stored (None when nothing was written) and the reconcile's result, as counted."""
        if decision.action is Action.APPLY and decision.intent is not None:
            return await self.apply(ref, body, decision.intent, decision), "applied"
        if decision.action is Action.REVERT:
            return await self.revert(ref, body), "reverted"
        if decision.verdict.state is State.CONFLICT:
            return None, "conflict"
        if decision.verdict.reason is Reason.WAITING_TURN:
            return None, "waiting"
        if decision.verdict.reason is Reason.TEMPLATE_TOO_LARGE:
            log.warning("not judging %s: %s", ref, decision.verdict.message)
            return None, "too_large"
        if decision.verdict.reason is Reason.NO_ROOM_FOR_ANNOTATIONS:
            log.warning("not writing %s: %s", ref, decision.verdict.message)
            return None, "no_room"
        return None, "unchanged"

    async def apply(
        self, ref: DeploymentRef, body: Mapping[str, Any], intent: Mapping[str, Any], decision: Decision
    ) -> dict[str, Any]:
        """Write the decision's intent on body (the Deployment as last read and decided on),
        taking over the preStop hooks the decision names."""
        if decision.patched is not None:
            # Injected at admission: lameduck keeps to its recorded fields, by JSON patch (the
            # decision made the patched Deployment when it measured its annotations).
            return await self.api.patch_deployment(ref, json_patch(body, decision.patched, guard=True))
        if decision.replace_prestop:
            return await self.api.take_over_prestops(body, decision.replace_prestop, intent)
        # Forced: the plan has checked every field the intent sets against the other managers'
        # values and found none in the way (or TakeOver allows it). What others still own there
        # are API defaults their create or update recorded, such as the grace period of 30s,
        # which lameduck raises.
        return await self.api.apply_deployment(intent, True)

    async def revert(self, ref: DeploymentRef, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Remove lameduck's fields from body; body itself when it carries none."""
        stored = body
        if admitted_paths(body):
            stored = await self.api.patch_deployment(ref, json_patch(body, reverted(body), guard=True))
            # Then the writers' ownership as it was: a second write, changing no value.
            ownership = ownership_restore_patch(body, stored)
            if ownership:
                stored = await self.api.patch_deployment(ref, ownership)
        if managed_by(stored, operation="Apply"):
            stored = await self.api.apply_deployment(revert_intent(stored), False)
        return stored
