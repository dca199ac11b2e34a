"""A TCP proxy whose answers come late, run in a pod by test_faults_serving.py (this file's
text is given to `python3 -c`): what a client sends goes on to an upstream at once; what the
upstream sends back reaches the client DELAY seconds after it arrived, in order. In front of
the webhook's port, TLS passes through untouched (the handshake completes with the webhook's
own certificate, DELAY late), and every review is answered DELAY late, on a new connection or
on one kept alive: a webhook that answers, but slowly.

One JSON line when it listens, one per connection accepted, and one per connection ended:
how long it was open, how many chunks reached the client late, and whether the client left
first.

    python3 -c "$(cat slow_tcp_proxy.py)" PORT DELAY_SECONDS UPSTREAM_HOST:PORT [UPSTREAM ...]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

READ_SIZE = 64 * 1024


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy at once, until the reader's end."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass


class LateCopy:
    """Copies a reader to a writer, each chunk `delay` seconds after it arrived, the reader's end
    too; counts the chunks sent."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.chunks = 0

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(READ_SIZE):
                    arrived.put_nowait((time.monotonic() + self.delay, data))
            except OSError:
                pass
            arrived.put_nowait((time.monotonic() + self.delay, b""))

        reading = asyncio.create_task(read())
        try:
            while True:
                due, data = await arrived.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # the delay this proxy adds
                if not data:
                    return
                writer.write(data)
                await writer.drain()
                self.chunks += 1
        except OSError:
            pass
        finally:
            reading.cancel()


class SlowProxy:
    def __init__(self, delay: float, upstreams: list[tuple[str, int]]) -> None:
        self.delay = delay
        self.upstreams = itertools.cycle(upstreams)
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, accepted = self.connections, time.monotonic()
        say(event="accepted", connection=number)
        host, port = next(self.upstreams)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError as err:
            say(event="ended", connection=number, upstream_error=repr(err))
            writer.close()
            return
        answers = LateCopy(self.delay)
        outward = asyncio.create_task(relay(reader, upstream_writer))
        back = asyncio.create_task(answers.run(upstream_reader, writer))
        # Either side's end ends the connection: the client leaving, or the upstream's close
        # once it reached the client.
        await asyncio.wait({outward, back}, return_when=asyncio.FIRST_COMPLETED)
        client_left = outward.done()
        for task in (outward, back):
            task.cancel()
        for side in (writer, upstream_writer):
            side.close()
        say(
            event="ended",
            connection=number,
            seconds=round(time.monotonic() - accepted, 3),
            late_chunks=answers.chunks,
            client_left=client_left,
        )


def upstream(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def main(port: int, proxy: SlowProxy) -> None:
    server = await asyncio.start_server(proxy.serve, port=port)
    say(event="listening", port=port, delay=proxy.delay)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), SlowProxy(float(sys.argv[2]), [upstream(a) for a in sys.argv[3:]])))
