"""After release: what the hold could not save, and what the late connections turned out to be.
Pure; the caller feeds snapshots of the kernel's view (traffic.Snapshot) and the time.

When the preStop answer returns, kubelet sends the app SIGTERM; the sidecar lives on (a native
sidecar until the app containers exited and kubelet signals it; a classic one, signalled with
the app, until no app port is listening any more, bounded by drainTimeout) and keeps reading
the pod's network namespace, as during the hold.

`LossCount`, the requests the hold lost: the growth of the kernel's `Tcp: OutRsts` (segments the
namespace sent with RST) from release to the end of the observation. The kernel answers with
RST a connection attempt to a port nobody listens on (refused), and a segment on a connection
the pod no longer has or closed with data unread (reset): a request that arrived too late.
  Counted too (over-count): every RST the namespace sends for another reason: to a stray or
  retransmitted segment of a connection already gone, several for one dead connection when the
  peer sends several segments, an app that closes connections abortively by design (SO_LINGER
  0), another container's ports (a mesh proxy), a client that retries at once after a refusal
  counts once per attempt, a request on an idle keep-alive connection crossing the app's FIN
  (a loss the client may retry on its own). The sidecar's own sockets send none by design: its
  API connections are closed before release, the report is posted after the count ends, and its
  port listens until then.
  Subtracted: kubelet's probes of an app port while it has no listener (probes run while a
  container terminates), at most one per probe per period. A real refusal from anywhere in
  such a period can be subtracted instead (under-count).
  Not counted (under-count): a SYN dropped rather than refused (a full accept queue, the pod's
  network already torn down: the client times out), a request answered with an error by the app,
  a reset the peer sent, anything before release (the hold's job) or after the observation (the
  sidecar's own SIGTERM; for a classic sidecar, the app's last listener closing).
  Unknown (None) when the counter cannot be read or went backwards.

`ConnectionFates`, what each reused connection was: an open connection that carried data after
stage 1 (received bytes grew) and then went quiet for quietPeriod while still established was
let go by its peer: an L7 proxy's pool (`pooled_quiet`: the largest time from stage 1's end to
its last data, during the hold or after release). One still busy at release that closed before
going quiet stayed busy until the app closed it: pinned (`pinned_until_closed`). A pinned client
that pauses on its own, or stops, looks pooled; a proxy that keeps a pooled connection busy
until the app closes it looks pinned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lameduck_sidecar.sockdiag import ESTABLISHED, LISTEN, TcpSocket
from lameduck_sidecar.traffic import Key, Probe, key, watched_ports


@dataclass(frozen=True)
class AfterRelease:
    """What the report says of the time after release."""

    lost: int | None
    pooled_quiet: float | None
    pinned_until_closed: int
    app_exit: float | None  # from release to the app's exit as observed; None when not seen
    # From release to the poll that saw the last loss; None without loss. The operator learns
    # from it how long after stage 1 a data plane still sent work (logic/learning.py).
    last_loss: float | None = None


def listening_ports(own_port: int, sockets: Iterable[TcpSocket]) -> frozenset[int]:
    return frozenset(s.local_port for s in sockets if s.state == LISTEN and s.local_port != own_port)


def app_listening(app_ports: frozenset[int], listening: frozenset[int]) -> bool:
    """Whether the app still listens (`listening`: listening_ports): on a declared port, or on
    any port but the sidecar's when none is declared."""
    return bool(listening & app_ports) if app_ports else bool(listening)


def observation_over(*, native: bool, terminated: bool, listening: bool, now: float, deadline: float) -> bool:
    """A native sidecar is signalled once the app containers exited: until then they may still
    be refused or reset. A classic one is signalled with the app: the app's exit is when its
    last listener closes. Either way never past the deadline, which leaves time to post."""
    if now >= deadline:
        return True
    return terminated if native else not listening


# Time kept, before the pod's grace period ends, to post the report after the observation.
POST_MARGIN_SECONDS = 1.0


def last_post_start(*, started: float, grace_period: float | None, api_timeout: float) -> float | None:
    """The latest moment a post of the report may start and still end (within the API timeout)
    before the pod's grace period, counted from the hold's start, ends and kubelet SIGKILLs the
    sidecar; None when the grace period is unknown."""
    return None if grace_period is None else started + grace_period - api_timeout - POST_MARGIN_SECONDS


def observation_deadline(
    *,
    native: bool,
    released: float,
    started: float,
    grace_period: float | None,
    drain_timeout: float,
    api_timeout: float,
) -> float:
    """When the observation ends at the latest: never so late that the report cannot be posted
    before the pod's grace period (counted from the hold's start) ends. A classic sidecar gives
    the app its drainTimeout; a native one waits for its own signal, which comes after the app's
    exit, so within the grace period (or drainTimeout when the grace period is unknown)."""
    last_start = last_post_start(started=started, grace_period=grace_period, api_timeout=api_timeout)
    limit = math.inf if last_start is None else last_start
    if native and grace_period is not None:
        return max(released, limit)
    return max(released, min(released + drain_timeout, limit))


@dataclass
class LossCount:
    probes: Sequence[Probe]
    _baseline: int | None = field(init=False, default=None)
    _last: int | None = field(init=False, default=None)
    _started: bool = field(init=False, default=False)
    _broken: bool = field(init=False, default=False)
    _probe_due: dict[int, float] = field(init=False, default_factory=dict)
    _probe_refusals: int = field(init=False, default=0)
    _counted: int = field(init=False, default=0)
    _last_loss_at: float | None = field(init=False, default=None)

    def observe(self, now: float, resets_sent: int | None, listening: frozenset[int]) -> None:
        """The first call, at release, is the baseline."""
        if not self._started:
            self._started = True
            self._baseline = self._last = resets_sent
            return
        if resets_sent is None or self._last is None or resets_sent < self._last:
            self._broken = True
        self._last = resets_sent
        for index, probe in enumerate(self.probes):
            if probe.port not in listening and now >= self._probe_due.get(index, -math.inf):
                self._probe_refusals += 1
                self._probe_due[index] = now + probe.period
        counted = self.lost()
        if counted is not None and counted > self._counted:
            self._counted = counted
            self._last_loss_at = now

    def last_loss_at(self) -> float | None:
        """When the count last grew; None without loss, or when the count is unknown."""
        return None if self.lost() in (None, 0) else self._last_loss_at

    def lost(self) -> int | None:
        if self._broken or self._baseline is None or self._last is None:
            return None
        return max(0, self._last - self._baseline - self._probe_refusals)


@dataclass
class ConnectionFates:
    app_ports: frozenset[int]
    own_port: int
    quiet_period: float
    since: float  # stage 1's end once known; until then the hold's start
    pooled_quiet: float | None = field(init=False, default=None)
    pinned_until_closed: int = field(init=False, default=0)
    _bytes: dict[Key, int | None] = field(init=False, default_factory=dict)
    _last_data: dict[Key, float] = field(init=False, default_factory=dict)
    _busy: set[Key] = field(init=False, default_factory=set)  # carried data since `since`
    _settled: set[Key] = field(init=False, default_factory=set)
    _at_release: set[Key] = field(init=False, default_factory=set)

    def stage1_ended(self, when: float) -> None:
        """Only data after stage 1 shows a data plane still sending."""
        self.since = when
        self._busy.clear()

    def observe(self, now: float, sockets: Sequence[TcpSocket]) -> None:
        ports = watched_ports(self.app_ports, self.own_port, sockets)
        seen = {key(s): s for s in sockets if s.state != LISTEN and s.local_port in ports}
        for k, sock in seen.items():
            before = self._bytes.get(k)
            grew = (
                k in self._bytes
                and sock.bytes_received is not None
                and before is not None
                and sock.bytes_received > before
            )
            self._bytes[k] = sock.bytes_received
            if grew:
                self._last_data[k] = now
                if now >= self.since:
                    self._busy.add(k)
            if (
                k in self._busy
                and k not in self._settled
                and sock.state == ESTABLISHED
                and now - self._last_data[k] >= self.quiet_period
            ):
                self._settled.add(k)  # went quiet on its own while open: its peer let go
                went_quiet = max(0.0, self._last_data[k] - self.since)
                self.pooled_quiet = went_quiet if self.pooled_quiet is None else max(self.pooled_quiet, went_quiet)
        for k in self._at_release - self._settled:
            now_seen = seen.get(k)
            if now_seen is None or now_seen.state != ESTABLISHED:
                self._settled.add(k)  # closed before it ever went quiet
                self.pinned_until_closed += 1
        for gone in [k for k in self._bytes if k not in seen]:
            del self._bytes[gone]
            self._last_data.pop(gone, None)
            self._busy.discard(gone)
            self._settled.discard(gone)
            self._at_release.discard(gone)

    def released(self, now: float) -> None:
        """The connections busy at release: each will turn out pooled or pinned."""
        self._at_release = {
            k for k in self._busy - self._settled if now - self._last_data.get(k, -math.inf) < self.quiet_period
        }
