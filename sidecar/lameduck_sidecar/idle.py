"""The sidecar's port until the first call to the hold: probes, /metrics and refused names, answered
by a loop on selectors, without asyncio, ssl or the API client, which an idle sidecar never needs
(docs/sidecar.md#memory). The first call with a name a container can have ends the loop: that
connection, every other open one and the listening sockets are handed to serving.py, which
answers it with a hold, and everything after it.
"""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from lameduck_sidecar.endpoint import IDLE_SECONDS, READ_SIZE, Connection, HoldCall, OwnConnections, Request, answer
from lameduck_sidecar.metrics import SidecarMetrics

# Connections accepted at once per wake-up of a listening socket, so one listener cannot starve the rest.
ACCEPT_BATCH = 64


@dataclass
class Client:
    """An accepted connection: its HTTP state, the bytes not yet sent, when it last moved."""

    sock: socket.socket
    http: Connection
    last_active: float
    outgoing: bytearray = field(default_factory=bytearray)


@dataclass
class Handover:
    """What serving.py takes over: the listening sockets, the open connections (the caller's among
    them, its call read and not yet answered), the call; the metrics, the count of the port's
    connections and the signals so far."""

    listeners: list[socket.socket]
    clients: list[Client]
    caller: Client
    call: HoldCall
    metrics: SidecarMetrics
    own: OwnConnections
    signals: Signals
    at: float  # when, on time.monotonic


class Signals:
    """SIGTERM and SIGINT, noted and waking the loop (install), until serving.py's event loop
    takes them over."""

    def __init__(self) -> None:
        self.received = False
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)

    def install(self) -> Signals:
        signal.set_wakeup_fd(self._writer.fileno())  # the handler runs once select returns
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)
        return self

    def _note(self, _signal: int, _frame: FrameType | None) -> None:
        self.received = True

    def note(self) -> None:
        """A signal, as from another thread."""
        self.received = True
        self._writer.send(b"\0")

    def fileno(self) -> int:
        return self._reader.fileno()

    def drain(self) -> None:
        try:
            while self._reader.recv(64):
                pass
        except BlockingIOError:
            pass


class IdleServer:
    def __init__(
        self,
        listeners: list[socket.socket],
        metrics: SidecarMetrics,
        own: OwnConnections,
        signals: Signals,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listeners = listeners
        self.metrics = metrics
        self.own = own
        self.signals = signals
        self.clock = clock
        self.clients: dict[int, Client] = {}
        self.selector = selectors.DefaultSelector()

    def run(self) -> Handover | None:
        """Serve until a call needs a hold (its Handover) or a signal came (None, every
        connection closed). The listening sockets stay open either way."""
        for listener in self.listeners:
            self.selector.register(listener, selectors.EVENT_READ, listener)
        self.selector.register(self.signals, selectors.EVENT_READ, self.signals)
        try:
            while not self.signals.received:
                for key, mask in self.selector.select(self._timeout()):
                    if key.data is self.signals:
                        self.signals.drain()
                    elif isinstance(key.data, Client):
                        handover = self._serve(key.data, mask)
                        if handover is not None:
                            return handover
                    else:
                        self._accept(key.data)
                self._expire()
            for client in list(self.clients.values()):
                self._close(client)
            return None
        finally:
            self.selector.close()

    def _timeout(self) -> float:
        oldest = min((c.last_active for c in self.clients.values()), default=self.clock())
        return max(0.0, oldest + IDLE_SECONDS - self.clock())

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the client gave up: the rest wait in the backlog
                return
            sock.setblocking(False)
            self.own.count += 1
            client = Client(sock, Connection(), self.clock())
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, client)

    def _serve(self, client: Client, mask: int) -> Handover | None:
        if mask & selectors.EVENT_READ:
            try:
                data = client.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._close(client)
                return None
            if data is not None:
                client.last_active = self.clock()
                client.http.receive(data)
        while (item := client.http.next_request()) is not None:
            found = answer(item, self.metrics) if isinstance(item, Request) else item
            if isinstance(found, HoldCall):
                return self._hand_over(client, found)
            client.outgoing += client.http.respond(found)
        self._flush(client)
        return None

    def _flush(self, client: Client) -> None:
        """Send what can be sent; while some is left, read nothing more from that client."""
        if client.outgoing:
            try:
                sent = client.sock.send(client.outgoing)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(client)
                return
            del client.outgoing[:sent]
            if sent:
                client.last_active = self.clock()
        if client.http.closed and not client.outgoing:
            self._close(client)
            return
        events = selectors.EVENT_WRITE if client.outgoing else selectors.EVENT_READ
        if self.selector.get_key(client.sock).events != events:
            self.selector.modify(client.sock, events, client)

    def _expire(self) -> None:
        now = self.clock()
        for client in [c for c in self.clients.values() if now - c.last_active >= IDLE_SECONDS]:
            self._close(client)

    def _close(self, client: Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        self.selector.unregister(client.sock)
        client.sock.close()

    def _hand_over(self, caller: Client, call: HoldCall) -> Handover:
        for client in self.clients.values():
            self.selector.unregister(client.sock)
        clients, self.clients = list(self.clients.values()), {}
        return Handover(self.listeners, clients, caller, call, self.metrics, self.own, self.signals, time.monotonic())
