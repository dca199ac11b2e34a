"""A well-behaved HTTP app for the demo and the benchmarks.

On SIGTERM it stops accepting new connections, answers what still arrives on open
keep-alive connections with `Connection: close` for a moment (so clients stop reusing
them), finishes the requests in flight, closes the rest, and exits: everything an app can
do right. What still fails during a rollout is the endpoint-propagation race that lameduck
fixes.

It offers a lame-duck mode (a policy's spec.hold.lameDuck: port 8080, path /lameduck): a GET
on LAME_DUCK_PATH from the pod itself (loopback) makes it close every connection after its
current response while it goes on accepting new ones, so requests on pooled or pinned
connections come on new connections the lameduck sidecar can count.

With IGNORE_SIGTERM=true it instead logs each SIGTERM and keeps serving as before, never
closing a connection, until kubelet SIGKILLs it at the end of its grace period: an app that
does everything wrong, for the tests of how a pod stops.

Env: PORT (8080), LATENCY_MS (response latency, 5), CLOSE_NOTICE_SECONDS (1), DRAIN_SECONDS (10),
IGNORE_SIGTERM (false), LAME_DUCK_PATH (/lameduck).
"""

import signal

# First of all: as PID 1 in its container the app gets no default SIGTERM action from the
# kernel, so a SIGTERM that came before the event loop's handler (a pod deleted while it
# starts) would be lost and the pod would run until SIGKILL. Note it now; main() acts on it.
_EARLY_SIGTERM: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, _frame: _EARLY_SIGTERM.append(signum))

import asyncio  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402

from aiohttp import web  # noqa: E402

HOSTNAME = socket.gethostname()
DRAINING = web.AppKey("draining", asyncio.Event)
LATENCY = web.AppKey("latency", float)


@web.middleware
async def close_when_draining(request: web.Request, handler) -> web.StreamResponse:  # type: ignore[no-untyped-def]
    response = await handler(request)
    if request.app[DRAINING].is_set():
        response.force_close()
    return response


async def handle(request: web.Request) -> web.Response:
    await asyncio.sleep(request.app[LATENCY])
    return web.Response(text=f"{HOSTNAME}\n")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def lame_duck(request: web.Request) -> web.Response:
    # Only from the pod itself: anyone else could make every connection a new one.
    if request.remote not in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        return web.Response(status=403, text="lame-duck mode is asked for from the pod itself\n")
    if not request.app[DRAINING].is_set():
        print(f"{HOSTNAME} lame duck: closing each connection after its response", flush=True)
    request.app[DRAINING].set()
    return web.Response(text="lame duck\n")


async def main() -> None:
    app = web.Application(middlewares=[close_when_draining])
    app[DRAINING] = asyncio.Event()
    app[LATENCY] = int(os.environ.get("LATENCY_MS", "5")) / 1000
    app.router.add_get("/healthz", healthz)
    app.router.add_get(os.environ.get("LAME_DUCK_PATH", "/lameduck"), lame_duck)
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=float(os.environ.get("DRAIN_SECONDS", "10")))
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", int(os.environ.get("PORT", "8080")))
    await site.start()
    print(f"{HOSTNAME} listening", flush=True)
    stop = asyncio.Event()
    if os.environ.get("IGNORE_SIGTERM", "").lower() == "true":
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGTERM, lambda: print(f"{HOSTNAME} SIGTERM ignored: still serving", flush=True)
        )
    else:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        if _EARLY_SIGTERM:
            stop.set()
    await stop.wait()
    print(f"{HOSTNAME} SIGTERM: no new connections; telling keep-alive clients to close", flush=True)
    await site.stop()
    app[DRAINING].set()
    await asyncio.sleep(float(os.environ.get("CLOSE_NOTICE_SECONDS", "1")))
    await runner.cleanup()
    print(f"{HOSTNAME} drained, exiting", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
