"""When a hold report whose post failed is posted again, and when the sidecar gives up on it.
Pure: reporter.py posts and waits; this only decides, from the attempts so far and the time.

The report is the one record of a hold that outlives the pod, so a post that fails for a reason
that waiting may cure (no answer: the API server down, unreachable or slower than the API
timeout; a 5xx; a 429) is tried again after 1, 2, 4, 4, ... s, each attempt bounded by the
API timeout, until it is stored or one of these ends it:

- a failure that waiting does not cure (403 forbidden, 422 invalid, any other answer);
- with the grace period unknown, MAX_ATTEMPTS failed attempts (with it known, the grace period
  alone bounds them: an outage whose end a cap had missed by seconds lost every report of its
  holds, while an attempt every MAX_WAIT_SECONDS costs one request per terminating pod);
- no attempt could end before the pod's grace period does (kubelet SIGKILLs the sidecar then):
  the last one starts at the latest moment that still ends in time (`last_start`), rather than
  none at all;
- with the grace period unknown, the sidecar's own SIGTERM: the attempt under way then, or the
  one made at once when it comes during a wait, is the last (nothing else bounds its stay).

The sidecar's own SIGTERM does not end the retries while the grace period is known: both kinds
of sidecar post after it (a native one is signalled once the app has exited, a classic one with
the app at release), so ending there would leave no retry at all.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 4.0
# With the grace period unknown, with the waits above: about a minute and a half of trying.
MAX_ATTEMPTS = 25
TOO_MANY_REQUESTS = 429
SERVER_ERRORS = range(500, 600)


@dataclass(frozen=True)
class RetrySchedule:
    first_wait: float = FIRST_WAIT_SECONDS
    max_wait: float = MAX_WAIT_SECONDS
    max_attempts: int = MAX_ATTEMPTS

    def wait_after(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed attempt: doubling from first_wait, up to max_wait."""
        return min(self.max_wait, self.first_wait * 2.0 ** min(max(attempts - 1, 0), 32))


def retryable(status: int | None) -> bool:
    """Whether a failed post may pass later: no answer at all (None), the server's own trouble or
    throttling; any other answer would be the same the next time."""
    return status is None or status == TOO_MANY_REQUESTS or status in SERVER_ERRORS


def next_attempt(
    schedule: RetrySchedule,
    *,
    attempts: int,
    now: float,
    may_pass: bool,
    last_start: float | None,
    terminated: bool,
) -> float | None:
    """When to post again after `attempts` failed attempts, the latest failed by `now` (`may_pass`:
    retryable()); None: give up. `last_start` is the latest moment an attempt may start and still
    end before the pod's grace period does, on the same clock (None: the grace period is unknown);
    `terminated`: the sidecar got its own SIGTERM."""
    if not may_pass:
        return None
    wanted = now + schedule.wait_after(attempts)
    if last_start is not None:
        return None if now >= last_start else min(wanted, last_start)
    if attempts >= schedule.max_attempts:
        return None
    # Unknown grace period: the wait is cut short by the sidecar's SIGTERM (reporter.py), and the
    # attempt that follows it, or the one it came during, is the last.
    return None if terminated else wanted
