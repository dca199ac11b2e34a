"""The admission webhook's HTTPS server, on a thread and event loop of its own.

On the operator's loop a review would wait behind every watch event, reconcile and stall
there; here it waits for none of them, only for its turn at the interpreter. (At fleet scale
the API server's wait for it was about a do-nothing webhook's either way: docs/benchmarks.md.)
The judge it calls runs on this thread,
so it must only read state the operator's loop replaces whole or changes by single dict
operations (the fleet's policies and namespace labels).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from lameduck_operator.http_bounds import HeaderDeadline, ReadBounds, request_middleware
from lameduck_operator.logic.admission import (
    Admitted,
    Judge,
    Refusal,
    ReviewInvalid,
    Skip,
    parse,
    refusal_answer,
    review,
)
from lameduck_operator.logic.compliance import Reason, State
from lameduck_operator.logic.decision import MAX_TEMPLATE_CONTAINERS
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.webhook_certificate import ServingCertificate

log = logging.getLogger("lameduck.operator.webhook")
WEBHOOK_PATH = "/mutate/deployments"
# The largest review body read. The API server takes objects up to 3 MiB, and etcd stores
# 1.5 MiB by default, so an UPDATE's review (object and oldObject) of any storable Deployment
# fits; anything larger is answered 413 before it is read whole or parsed (docs/admission.md).
MAX_REVIEW_BYTES = 4 * 1024 * 1024
CERT_RELOAD_SECONDS = 30.0
START_TIMEOUT_SECONDS = 30.0
# The longest exception text logged below DEBUG: aiohttp's parse errors quote what they could
# not parse, up to a whole request line of it.
MAX_EXCEPTION_CHARS = 300
# lameduck_webhook_requests_total's result for each refusal.
REFUSAL_RESULTS = {
    Refusal.BAD_REQUEST: "invalid",
    Refusal.TIMEOUT: "timeout",
    Refusal.REQUEST_ENTITY_TOO_LARGE: "body_too_large",
    Refusal.INTERNAL_ERROR: "error",
}


class OneLineExceptions(logging.Filter):
    """On a logger: a record with an exception keeps its traceback only while the logger logs
    DEBUG; otherwise the exception is one short line at the end of the message. A client that
    sends garbage, or a review that trips a bug, must not write a traceback per request."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not self._logger.isEnabledFor(logging.DEBUG):
            err = record.exc_info[1]
            text = " ".join(str(err).split())
            if len(text) > MAX_EXCEPTION_CHARS:
                text = text[:MAX_EXCEPTION_CHARS] + "..."
            record.msg = f"{record.getMessage()}: {type(err).__name__}: {text}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


# aiohttp logs what it refuses itself (a malformed request line, headers) on this logger too.
log.addFilter(OneLineExceptions(log))


class AdmissionServerFailed(RuntimeError):
    """The webhook's server did not start (its certificate unreadable, its port taken)."""


class _Refused(Exception):
    """A request answered with a Status (`refusal`) instead of a review's answer."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


@dataclass
class AdmissionServer:
    judge: Judge
    metrics: OperatorMetrics
    port: int
    # The mounted certificate and key; reloaded every `cert_reload_seconds` when kubelet rotates them.
    cert: Path
    key: Path
    host: str = "0.0.0.0"
    bounds: ReadBounds = field(default_factory=ReadBounds)
    cert_reload_seconds: float = CERT_RELOAD_SECONDS
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _started: threading.Event = field(default_factory=threading.Event)
    _failure: BaseException | None = None
    # The port bound: `port` unless that was 0.
    bound_port: int | None = None

    def start(self) -> None:
        """Serve from a new thread; return once listening. Raises AdmissionServerFailed."""
        self._thread = threading.Thread(target=self._run, name="lameduck-webhook", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_SECONDS):
            raise AdmissionServerFailed(f"the webhook did not listen on :{self.port} within {START_TIMEOUT_SECONDS}s")
        if self._failure is not None:
            raise AdmissionServerFailed(f"the webhook could not serve on :{self.port}: {self._failure}")
        log.info("serving the admission webhook on :%d%s from its own thread", self.bound_port, WEBHOOK_PATH)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(START_TIMEOUT_SECONDS)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:  # handed to start(), which raises it as a failure
            self._failure = err
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        certificate = ServingCertificate(self.cert, self.key, self.metrics)
        app = web.Application(client_max_size=MAX_REVIEW_BYTES, middlewares=[request_middleware])
        app.router.add_post(WEBHOOK_PATH, self._mutate)
        # No decompression: the API server never compresses a review, and a compressed body
        # could unpack far past MAX_REVIEW_BYTES.
        runner = web.AppRunner(
            app,
            access_log=None,
            logger=log,
            auto_decompress=False,
            keepalive_timeout=self.bounds.idle,
            lingering_time=self.bounds.linger,
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None
        try:
            listening = socket.create_server((self.host, self.port))
            self.bound_port = listening.getsockname()[1]
            server = await self._loop.create_server(
                lambda: HeaderDeadline(handlers(), self.bounds.headers, log),
                sock=listening,
                ssl=certificate.listening,
                ssl_handshake_timeout=self.bounds.handshake,
                ssl_shutdown_timeout=self.bounds.linger,
            )
            reload = asyncio.create_task(self._reload_certificate(certificate))
            self._started.set()
            await self._stop.wait()
            reload.cancel()
            server.close()
        finally:
            await runner.cleanup()

    async def _reload_certificate(self, certificate: ServingCertificate) -> None:
        while True:
            await asyncio.sleep(self.cert_reload_seconds)
            certificate.reload()

    async def _mutate(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            body = parse(await self._body(request))
            admitted = review(body, self.judge)
        except ReviewInvalid as err:
            # Not JSON, or no review to answer: say so, never crash.
            return self._refuse(Refusal.BAD_REQUEST, str(err))
        except _Refused as err:
            return self._refuse(err.refusal, str(err))
        except Exception as err:
            # A bug here must not take the process down; the write is admitted unchanged. One
            # line per failure (OneLineExceptions), its traceback at DEBUG.
            log.error("admission review failed inside lameduck", exc_info=err)
            return self._refuse(Refusal.INTERNAL_ERROR, "internal error")
        if admitted.skipped is Skip.TEMPLATE_TOO_LARGE:
            meta = (((body.get("request") or {}).get("object")) or {}).get("metadata") or {}
            log.warning(
                "admitted %s/%s unchanged without judging it: its pod template has more than %d containers",
                (body.get("request") or {}).get("namespace"),
                meta.get("name") or meta.get("generateName"),
                MAX_TEMPLATE_CONTAINERS,
            )
        self.metrics.webhook_requests.labels(result=_result(admitted)).inc()
        self.metrics.webhook_seconds.observe(time.perf_counter() - started)
        return web.json_response(admitted.response)

    async def _body(self, request: web.Request) -> bytes:
        """The whole body, within MAX_REVIEW_BYTES and the body's time bound. Raises _Refused."""
        too_large = _Refused(
            Refusal.REQUEST_ENTITY_TOO_LARGE, f"the review body is larger than {MAX_REVIEW_BYTES} bytes"
        )
        if request.content_length is not None and request.content_length > MAX_REVIEW_BYTES:
            raise too_large
        try:
            async with asyncio.timeout(self.bounds.body):
                # aiohttp stops reading past client_max_size (a chunked body too), before any parsing.
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            raise _Refused(Refusal.TIMEOUT, f"the review body did not arrive within {self.bounds.body}s") from None
        except (web.RequestPayloadError, ConnectionError) as err:
            # Broken framing (a bad chunk), or the client left before its body ended.
            raise _Refused(Refusal.BAD_REQUEST, f"the review body did not arrive whole: {err}") from None

    def _refuse(self, refusal: Refusal, message: str) -> web.Response:
        """A Status instead of a review's answer: under failurePolicy Ignore the API server
        then admits the write unchanged."""
        if refusal in (Refusal.REQUEST_ENTITY_TOO_LARGE, Refusal.TIMEOUT):
            log.warning("refused a review: %s", message)
        elif refusal is Refusal.BAD_REQUEST:
            log.debug("refused a review: %s", message)
        self.metrics.webhook_requests.labels(result=REFUSAL_RESULTS[refusal]).inc()
        return web.json_response(refusal_answer(refusal, message), status=refusal.code)


def _result(admitted: Admitted) -> str:
    if admitted.patch:
        return "patched"
    if admitted.skipped is Skip.TEMPLATE_TOO_LARGE:
        return "too_large"
    if admitted.decision is None:
        return "skipped"
    if admitted.decision.verdict.reason is Reason.NO_ROOM_FOR_ANNOTATIONS:
        return "no_room"
    return "conflict" if admitted.decision.verdict.state is State.CONFLICT else "unchanged"
