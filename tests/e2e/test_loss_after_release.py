"""The hold report's `lostAfterRelease` on a real cluster: exactly the connection attempts a
client saw refused or reset after the hold released, not merely some.

Traffic goes from this machine to the pod's IP, so the pod network must be reachable from
here (it is on the local cluster and on kind, whose nodes share this machine's clock too).
"""

from __future__ import annotations

from pathlib import Path

from harness.attempts import RST_OUTCOMES, Attempts, Outcome, attempt
from harness.demo import SidecarLog, start_guarded_demo
from harness.install import Operator
from harness.kube import Kube, wait_until
from lameduck_operator.logic.shutdown import HoldOutcome, HoldReport, parse_hold_report
from lameduck_operator.names import REPORT_SELECTOR, SIDECAR_NAME, SidecarEnv

APP_PORT = 8080
# New connections a second from this machine: each new work to the hold, which therefore
# only ends at maxHold, with the client still sending.
RATE = 20
# The client stops once it has seen this many refused or reset (1.5 s at RATE).
FAILURES = 30
# How long the demo app lives on after SIGTERM closed its listener (its CLOSE_NOTICE_SECONDS):
# the time in which the client's failures must all fall, 4 s more than they need.
LISTENER_CLOSED_SECONDS = 6


def hold_report(kube: Kube, namespace: str, pod: str) -> HoldReport | None:
    """The pod's hold report, read with the operator's own parser; None until it is posted."""
    for event in kube.items("events", namespace, REPORT_SELECTOR):
        if (event.get("involvedObject") or {}).get("name") == pod:
            return parse_hold_report(event)
    return None


def test_lost_after_release_is_exactly_the_attempts_refused_or_reset_after_release(
    kube: Kube, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """A client opens a new connection to the pod's IP 20 times a second, one at a time, each a
    GET never retried, and records each attempt's outcome and when it ended. The pod is deleted;
    the hold (maxHold 1 s, quietPeriod 1 s) ends at maxHold with the client still sending. On
    SIGTERM the demo app closes its listener and lives on for LISTENER_CLOSED_SECONDS: every
    attempt then is refused, one RST each. The client stops after FAILURES of them.

    Why the two counts must be equal, edge by edge:
    - Start. The sidecar reads its baseline of `Tcp: OutRsts` at release, before its preStop
      answer goes out; kubelet sends SIGTERM only after that answer, and until SIGTERM the app
      serves. Checked: no attempt failed before the release time the sidecar logged.
    - In flight. One attempt at a time: one that the listener's close catches in the kernel's
      accept queue is reset (one RST, `reset` here too); one that was accepted is answered.
    - End. A native sidecar counts until kubelet signals it, after the app container exited;
      the client stopped long before. Checked: every failure ended before release plus the
      report's `appExitSeconds`. The client does not run until the pod is gone: after the
      count ends the network namespace still refuses, and rightly uncounted.
    - Probes. The app has none, so kubelet never connects to its port and the sidecar subtracts
      nothing (its LAMEDUCK_PROBES is unset). The sidecar's own readiness probe goes to the
      sidecar's port, which listens until after the count ends.
    - Nothing else sends RSTs: the client reads each answer to the server's close (its request
      asks for one) and sends nothing after an RST; no other traffic reaches the pod.
    One race is left, hence the one tolerance: an attempt whose handshake or request segment is
    still on the wire at the instant the listener closes can meet no socket twice, two RSTs for
    one `reset` attempt. So the count may exceed the client's by at most its resets, and must
    equal it when there were none (the usual run: only refusals). On loopback with attempts
    back to back (one always in flight at the close), 7 of 75 runs saw a reset and 1 of those 7
    was counted twice; at 20 a second an attempt is in flight about an eighth of the time.

    The count must then reach the operator: it trusts the report and adds exactly that to
    lameduck_requests_lost_after_release_total for the namespace.
    """
    start_guarded_demo(
        kube,
        namespace,
        replicas=1,
        readiness_probe=False,
        app_env={"CLOSE_NOTICE_SECONDS": str(LISTENER_CLOSED_SECONDS)},
        hold={"maxHold": "1s", "quietPeriod": "1s", "propagationDelay": "0s"},
    )
    (pod,) = kube.items("pods", namespace, "app=demo")
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    sidecar = next(c for c in pod["spec"].get("initContainers") or [] if c["name"] == SIDECAR_NAME)
    assert sidecar.get("restartPolicy") == "Always", "a native sidecar: it counts until the app has exited"
    assert SidecarEnv.PROBES not in {e["name"] for e in sidecar.get("env") or []}, "no probe to subtract"
    # No readiness probe: the pod is Ready as soon as its containers run, maybe before the app listens.
    wait_until(lambda: attempt(ip, APP_PORT).outcome is Outcome.OK, 30, "the app answers on the pod's IP")
    log = SidecarLog(kube, namespace, name, tmp_path / "sidecar.log")

    with Attempts(ip, APP_PORT, rate=RATE) as client:
        wait_until(lambda: client.count(frozenset({Outcome.OK})) >= RATE, 15, "a second of answered attempts")
        kube.run("delete", "pod", name, "-n", namespace, "--wait=false")
        wait_until(lambda: client.count(RST_OUTCOMES) >= FAILURES, 30, f"{FAILURES} attempts refused or reset")
    made = client.made  # the block's end stopped the client: nothing is in flight

    hold = log.hold()
    released_at = hold["started_at"] + hold["seconds"]
    report = wait_until(lambda: hold_report(kube, namespace, name), 60, f"the hold report of {name}")
    failed = [a for a in made if a.outcome in RST_OUTCOMES]
    resets = sum(1 for a in failed if a.outcome is Outcome.RESET)
    assert report.outcome is HoldOutcome.TIMEOUT, "released at maxHold, the client's connections still coming"
    unexpected = {a.outcome for a in made} - {Outcome.OK, *RST_OUTCOMES}
    assert not unexpected, f"every failure was an RST from the pod, not {sorted(unexpected)}"
    assert [a for a in failed if a.ended <= released_at] == [], "the app refused nothing during the hold"
    assert report.app_exit_seconds is not None, "the count ended at the app's exit, not at its bound"
    # A native sidecar's appExitSeconds: from release to its own SIGTERM; its count ends after.
    sidecar_signalled_at = released_at + report.app_exit_seconds
    assert max(a.ended for a in failed) < sidecar_signalled_at, "every failure came before the count ended"
    assert report.lost_after_release is not None, "the sidecar read the kernel's counter"
    assert len(failed) <= report.lost_after_release <= len(failed) + resets, (
        f"the sidecar counted {report.lost_after_release}, the client saw {len(failed)} refused or reset "
        f"({resets} reset): {[(round(a.ended - released_at, 3), a.outcome.value) for a in failed]}"
    )

    metric, labels = "lameduck_requests_lost_after_release_total", f'namespace="{namespace}"'
    wait_until(
        lambda: operator.metric(metric, labels) == report.lost_after_release,
        60,
        f"the operator adds the report's {report.lost_after_release} to {metric}{{{labels}}}",
    )
