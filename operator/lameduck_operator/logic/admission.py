"""The admission webhook's logic: an AdmissionReview in, the response out.

A Deployment write that starts a rollout (a create, or an update that changes the pod
template) gets the intent `decide` chooses for it, as a JSON patch; any other write, a
Deployment no policy governs, or one already carrying its intent, passes unchanged. A
conflict is admitted unchanged too, with a warning the writer sees (kubectl prints it), and so
is a Deployment whose annotations lameduck's would take over the API server's limit: the patch
would have the writer's own valid write refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lameduck_operator.logic.admitted import json_patch
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import MAX_TEMPLATE_CONTAINERS, Action, Decision, too_large

REVIEW_API_VERSION = "admission.k8s.io/v1"
ROLLOUT_OPERATIONS = ("CREATE", "UPDATE")

# The decision for a Deployment as written (namespace filled in), at admission.
Judge = Callable[[Mapping[str, Any]], Decision]


class Skip(StrEnum):
    """Why a write was let through untouched without a decision."""

    OPERATION = "operation"
    NOT_A_DEPLOYMENT = "not a Deployment"
    TEMPLATE_UNCHANGED = "template unchanged"
    # More containers than lameduck judges (decision.MAX_TEMPLATE_CONTAINERS): not judged at all, so
    # that one such review does not hold up every other one behind it.
    TEMPLATE_TOO_LARGE = "template too large"


class Invalid(StrEnum):
    """Why a body is no AdmissionReview lameduck can answer at all."""

    NOT_JSON = "NotJSON"
    NOT_A_REVIEW = "NotAnAdmissionReview"
    UNSUPPORTED_VERSION = "UnsupportedVersion"
    NO_UID = "NoRequestUID"


class Refusal(StrEnum):
    """Why a request got a Status instead of a review's answer, as Kubernetes names a Status's
    reason; `code` is its HTTP status. Under failurePolicy Ignore the API server admits the
    write unchanged after any of them."""

    BAD_REQUEST = "BadRequest"
    TIMEOUT = "Timeout"
    REQUEST_ENTITY_TOO_LARGE = "RequestEntityTooLarge"
    INTERNAL_ERROR = "InternalError"

    @property
    def code(self) -> int:
        return _REFUSAL_CODES[self]


_REFUSAL_CODES = {
    Refusal.BAD_REQUEST: 400,
    Refusal.TIMEOUT: 408,
    Refusal.REQUEST_ENTITY_TOO_LARGE: 413,
    Refusal.INTERNAL_ERROR: 500,
}


class ReviewInvalid(Exception):
    """Not an AdmissionReview lameduck can answer at all (no request uid to answer to).

    Not a ValueError: an `except ValueError` around the judge must never take a bug in it for
    a bad body."""

    def __init__(self, reason: Invalid, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Admitted:
    response: dict[str, Any]
    decision: Decision | None
    patch: tuple[dict[str, Any], ...] = ()
    # Why the write was let through untouched without a decision, if it was.
    skipped: Skip | None = None


def _answer(
    uid: str, *, patch: list[dict[str, Any]] | None = None, warnings: list[str] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch, separators=(",", ":")).encode()).decode()
    if warnings:
        response["warnings"] = warnings
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}


def parse(raw: bytes) -> Any:
    """The JSON in a review's body. Raises ReviewInvalid(NOT_JSON), for nesting too deep to
    parse as well (a RecursionError is no bug of lameduck's)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ReviewInvalid(Invalid.NOT_JSON, f"the body is not JSON: {err}") from None


def _request(review: Any) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(review, Mapping) or review.get("kind") != "AdmissionReview":
        raise ReviewInvalid(Invalid.NOT_A_REVIEW, "the body is not an AdmissionReview")
    if review.get("apiVersion") != REVIEW_API_VERSION:
        raise ReviewInvalid(
            Invalid.UNSUPPORTED_VERSION,
            f"only {REVIEW_API_VERSION} AdmissionReviews are served, got {review.get('apiVersion')!r}",
        )
    request = review.get("request")
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise ReviewInvalid(Invalid.NO_UID, "the AdmissionReview has no request uid")
    return request["uid"], request


def review(body: Any, judge: Judge, *, max_containers: int | None = MAX_TEMPLATE_CONTAINERS) -> Admitted:
    """Answer one AdmissionReview. Raises ReviewInvalid only when there is nobody to answer.

    A Deployment with more than max_containers is admitted unchanged without being judged
    (None lifts the bound: benchmarks).
    """
    uid, request = _request(body)
    obj = request.get("object")
    kind = (request.get("kind") or {}).get("kind") if isinstance(request.get("kind"), Mapping) else None
    if request.get("operation") not in ROLLOUT_OPERATIONS:
        return Admitted(_answer(uid), None, skipped=Skip.OPERATION)
    if kind != "Deployment" or not isinstance(obj, Mapping) or not isinstance(obj.get("spec"), Mapping):
        return Admitted(_answer(uid), None, skipped=Skip.NOT_A_DEPLOYMENT)
    old = request.get("oldObject")
    unchanged = isinstance(old, Mapping) and (old.get("spec") or {}).get("template") == obj["spec"].get("template")
    if request.get("operation") == "UPDATE" and unchanged:
        # No rollout starts: OnNextRollout injects nothing, and Immediate is the reconciler's.
        return Admitted(_answer(uid), None, skipped=Skip.TEMPLATE_UNCHANGED)
    if too_large(obj, max_containers):
        return Admitted(_answer(uid), None, skipped=Skip.TEMPLATE_TOO_LARGE)
    written = dict(obj)
    meta = dict(written.get("metadata") or {})
    meta.setdefault("namespace", request.get("namespace"))
    written["metadata"] = meta
    decision = judge(written)
    verdict = decision.verdict
    if verdict.policy is not None and (
        verdict.state is State.CONFLICT or verdict.reason is Reason.NO_ROOM_FOR_ANNOTATIONS
    ):
        warning = f"lameduck: {verdict.policy} not applied: {verdict.message}"
        return Admitted(_answer(uid, warnings=[warning[:1000]]), decision)
    if decision.action is not Action.APPLY or decision.patched is None:
        return Admitted(_answer(uid), decision)
    patch = json_patch(written, decision.patched)
    return Admitted(_answer(uid, patch=patch), decision, tuple(patch))


def refusal_answer(refusal: Refusal, message: str) -> dict[str, Any]:
    """The body of the answer to a request that gets no review's answer: a Status the API server
    reads (it logs the message), with the HTTP status `refusal.code`."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": refusal.value,
        "code": refusal.code,
    }
