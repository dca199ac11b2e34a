"""The writes that carry out a decision about one Deployment, each returning the Deployment as the
API server stored it.

Applying the intent takes one of two paths: a JSON patch of the fields recorded at admission
(the webhook injected them, so lameduck keeps to those), or a server-side apply, which takes
over other managers' values where the policy says TakeOver, records them, and puts back those it
stops setting (logic/takeover.py). Reverting removes lameduck's fields the same way they came:
after a JSON patch it restores the other writers' ownership as it was, and its apply puts back
the values it had taken over and then gives them back to their owners. Either apply first makes
lameduck's what a take-over whose apply failed left to lameduck-takeover.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from lameduck_operator.logic.admitted import admitted_paths, json_patch, reverted
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import Action, Decision, revert_intent
from lameduck_operator.logic.intent import FieldPath
from lameduck_operator.logic.ownership import managed_by, ownership_restore_patch
from lameduck_operator.logic.selection import DeploymentRef
from lameduck_operator.logic.takeover import ServerSideWrite, adoption_patch, hand_back_patch, server_side_write
from lameduck_operator.names import TAKEOVER_MANAGER
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
            return await self.apply(ref, body, decision.intent, decision.patched, decision.replaced), "applied"
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
        self,
        ref: DeploymentRef,
        body: Mapping[str, Any],
        intent: Mapping[str, Any],
        patched: Mapping[str, Any] | None,
        replaced: tuple[FieldPath, ...],
    ) -> dict[str, Any]:
        """Write intent on body (the Deployment as last read and decided on): patched, the
        Deployment as the decision's JSON patch leaves it, when it chose one; else by apply,
        taking over the other managers' values at the paths in replaced."""
        if patched is not None:
            # Injected at admission: lameduck keeps to its recorded fields, by JSON patch (the
            # decision made the patched Deployment when it measured its annotations).
            return await self.api.patch_deployment(ref, json_patch(body, patched, guard=True))
        # Forced: the plan has checked every field the intent sets against the other managers'
        # values and found none in the way (or TakeOver allows it). What others still own there
        # are API defaults their create or update recorded, such as the grace period of 30s,
        # which lameduck raises.
        return await self._server_side(ref, body, lambda stored: server_side_write(stored, intent, replaced))

    async def revert(self, ref: DeploymentRef, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """Remove lameduck's fields from body; body itself when it carries none."""
        stored = body
        if admitted_paths(body):
            stored = await self.api.patch_deployment(ref, json_patch(body, reverted(body), guard=True))
            # Then the writers' ownership as it was: a second write, changing no value.
            ownership = ownership_restore_patch(body, stored)
            if ownership:
                stored = await self.api.patch_deployment(ref, ownership)
        if managed_by(stored, operation="Apply") or managed_by(stored, TAKEOVER_MANAGER):
            # An apply of nothing but the values lameduck took over, as they were.
            stored = await self._server_side(
                ref, stored, lambda now: server_side_write(now, revert_intent(now), ()), leaving=True
            )
        return stored

    async def _server_side(
        self,
        ref: DeploymentRef,
        body: Mapping[str, Any],
        write_on: Callable[[Mapping[str, Any]], ServerSideWrite],
        *,
        leaving: bool = False,
    ) -> dict[str, Any]:
        """Carry out the server-side write write_on decides for body, once a take-over whose apply
        did not go through has had its fields made lameduck's."""
        adoption = adoption_patch(body)
        if adoption:
            body = await self.api.patch_deployment(ref, adoption)
        write = write_on(body)
        if write.take_over:
            stored = await self.api.take_over(ref, write.take_over, write.intent)
        else:
            stored = await self.api.apply_deployment(write.intent, True)
        # The values put back go to their owners: a second write, changing no value.
        ownership = hand_back_patch(stored, write.handed_back, leaving=leaving)
        if ownership:
            stored = await self.api.patch_deployment(ref, ownership)
        return stored
