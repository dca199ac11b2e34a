"""bench.null_webhook: a webhook that does nothing, called for exactly the writes lameduck's is."""

from __future__ import annotations

import base64
import copy
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench import null_webhook
from bench.null_webhook_server import admit

LAMEDUCK = {
    "metadata": {"name": "lameduck", "resourceVersion": "7"},
    "webhooks": [
        {
            "name": "deployments.lameduck.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "lameduck-webhook", "namespace": "lameduck-system"}},
            "failurePolicy": "Ignore",
            "matchConditions": [{"name": "template-written", "expression": "object.spec.template != oldObject.spec"}],
            "namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["kube-system"]}]},
            "rules": [{"apiGroups": ["apps"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}],
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "None",
            "timeoutSeconds": 3,
        }
    ],
}


def test_the_null_webhook_is_called_for_the_same_writes_as_lameduck_and_never_reinvoked() -> None:
    untouched = copy.deepcopy(LAMEDUCK)
    configuration = null_webhook.mirrored(LAMEDUCK, b"PEM")
    assert untouched == LAMEDUCK, "lameduck's configuration is left as it was"
    assert configuration["metadata"] == {"name": null_webhook.CONFIGURATION}
    (entry,) = configuration["webhooks"]
    ours: dict[str, Any] = LAMEDUCK["webhooks"][0]  # type: ignore[index]
    for same in ("rules", "matchConditions", "namespaceSelector", "failurePolicy", "timeoutSeconds", "sideEffects"):
        assert entry[same] == ours[same], same
    assert entry["name"] == null_webhook.WEBHOOK
    assert entry["clientConfig"]["service"]["namespace"] == null_webhook.NAMESPACE
    assert base64.b64decode(entry["clientConfig"]["caBundle"]) == b"PEM"
    assert entry["reinvocationPolicy"] == "Never"


async def test_the_null_server_admits_the_review_it_was_sent_unchanged() -> None:
    app = web.Application()
    app.router.add_post("/", admit)
    async with TestClient(TestServer(app)) as client:
        answer = await client.post("/", json={"kind": "AdmissionReview", "request": {"uid": "u-1", "object": {}}})
        assert answer.status == 200
        body = await answer.json()
    assert body["response"] == {"uid": "u-1", "allowed": True}
