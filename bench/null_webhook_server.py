"""A mutating webhook that admits every write unchanged and does nothing else: the floor
against which lameduck's webhook is measured (bench.null_webhook deploys it).

Served as lameduck's is (aiohttp, TLS, the same Python) but it reads only the request's uid,
so what the API server waits for it is the cluster's own cost of calling a webhook.

    python null_webhook_server.py CERT KEY PORT
"""

from __future__ import annotations

import ssl
import sys

from aiohttp import web

REVIEW_API_VERSION = "admission.k8s.io/v1"


async def admit(request: web.Request) -> web.Response:
    review = await request.json()
    uid = review["request"]["uid"]
    return web.json_response(
        {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, "allowed": True}}
    )


def main(cert: str, key: str, port: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/", admit)
    web.run_app(app, port=int(port), ssl_context=context, access_log=None, print=None)


if __name__ == "__main__":
    main(*sys.argv[1:4])
