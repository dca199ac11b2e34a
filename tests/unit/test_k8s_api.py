"""Reading the API server's structured answers, never its message text."""

from __future__ import annotations

import json

import pytest

from lameduck_operator.k8s.pod_conditions import invalid_fields

UID_IMMUTABLE = {
    "kind": "Status",
    "status": "Failure",
    "reason": "Invalid",
    "code": 422,
    "details": {"name": "web-1", "kind": "pods", "causes": [{"reason": "FieldValueInvalid", "field": "metadata.uid"}]},
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(json.dumps(UID_IMMUTABLE), {"metadata.uid"}, id="a 422 naming metadata.uid"),
        pytest.param(json.dumps(UID_IMMUTABLE).encode(), {"metadata.uid"}, id="as bytes"),
        pytest.param(
            json.dumps({**UID_IMMUTABLE, "message": "metadata.uid", "details": {"causes": [{"field": "spec.x"}]}}),
            {"spec.x"},
            id="the message text is not read",
        ),
        pytest.param(json.dumps({"kind": "Status", "code": 422}), set(), id="a Status without causes"),
        pytest.param("<html>bad gateway</html>", set(), id="not JSON"),
        pytest.param(None, set(), id="no body"),
        pytest.param(json.dumps([1, 2]), set(), id="JSON that is no Status"),
    ],
)
def test_invalid_fields_come_from_the_status_causes(body: object, expected: set[str]) -> None:
    assert invalid_fields(body) == expected
