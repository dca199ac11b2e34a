"""A well-behaved HTTP app for the demo and the benchmarks.

On SIGTERM it stops accepting, finishes the requests in flight, closes keep-alive
connections, and exits: everything an app can do right. What fails during a rollout
despite that is the endpoint-propagation race, which is what lameduck fixes.

Env: PORT (8080), LATENCY_MS (response latency, default 5), DRAIN_SECONDS (in-flight limit, 10).
"""

import asyncio
import os
import signal
import socket

from aiohttp import web

HOSTNAME = socket.gethostname()


async def handle(request: web.Request) -> web.Response:
    await asyncio.sleep(request.app["latency"])
    return web.Response(text=f"{HOSTNAME}\n")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def main() -> None:
    app = web.Application()
    app["latency"] = int(os.environ.get("LATENCY_MS", "5")) / 1000
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=float(os.environ.get("DRAIN_SECONDS", "10")))
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", int(os.environ.get("PORT", "8080"))).start()
    print(f"{HOSTNAME} listening", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(f"{HOSTNAME} SIGTERM: closing the listener, draining", flush=True)
    # Closes the listening socket, waits for handlers in flight, closes idle keep-alives.
    await runner.cleanup()
    print(f"{HOSTNAME} drained, exiting", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
