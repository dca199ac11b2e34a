"""The sidecar's side of its contract with the operator, defined once: the environment it reads
(lameduck_operator.names.SidecarEnv writes it), the hold route, the hold report's label, version
and the fields added after release, and the learned-delay ConfigMap the operator writes and the
sidecar reads. tests/unit/test_sidecar_contract.py joins the two sides."""

from __future__ import annotations

from typing import Final

HOLD_ROUTE = "/hold/{container}"
REPORT_LABEL = "lameduck.dev/report"
REPORT_VALUE = "hold"
# The report message's schema version: the operator ignores reports of a version it does not know.
REPORT_VERSION = 1

# Per namespace, written by the operator: one data key per Deployment name, its value JSON
# {"version": LEARNED_VERSION, "pooledDelaySeconds": <float>, "reports": <int>}. The sidecar
# reads it (get, by this name only) when a hold starts.
LEARNED_CONFIGMAP = "lameduck-learned"
LEARNED_VERSION = 1


class LearnedField:
    """The keys of one Deployment's value in LEARNED_CONFIGMAP."""

    VERSION: Final = "version"
    POOLED_DELAY_SECONDS: Final = "pooledDelaySeconds"
    REPORTS: Final = "reports"
    # The learned maxHold (or, in a value of no report, the starting budget): the operator
    # applies it at admission, and a hold started before then takes it up to
    # LAMEDUCK_MAX_HOLD_CAP (learned.learned_max_hold).
    LEARNED_MAX_HOLD_SECONDS: Final = "learnedMaxHoldSeconds"


class ReportField:
    """Hold report fields measured after release (report version 1; optional for the reader)."""

    LOST_AFTER_RELEASE: Final = "lostAfterRelease"
    POOLED_QUIET_SECONDS: Final = "pooledQuietSeconds"
    PINNED_UNTIL_CLOSED: Final = "pinnedUntilClosed"
    LEARNED_DELAY_SECONDS: Final = "learnedDelaySeconds"
    APP_EXIT_SECONDS: Final = "appExitSeconds"
    # Whether the app's lame-duck mode was asked for and turned on (LameDuckState values).
    LAME_DUCK: Final = "lameDuckMode"
    # From release to the last request lost (lostAfterRelease > 0), seconds; None without loss.
    LAST_LOSS_SECONDS: Final = "lastLossSeconds"
    # A headless Service listed the pod: clients that reach pod IPs directly may exist.
    HEADLESS_SERVICE: Final = "headlessService"


class Env:
    """The environment variables the sidecar reads. Plain strings: they are keys of os.environ."""

    # Set by the operator (lameduck_operator.names.SidecarEnv)
    POD_NAME: Final = "LAMEDUCK_POD_NAME"
    POD_NAMESPACE: Final = "LAMEDUCK_POD_NAMESPACE"
    POD_UID: Final = "LAMEDUCK_POD_UID"
    POD_IP: Final = "LAMEDUCK_POD_IP"
    HOST_IP: Final = "LAMEDUCK_HOST_IP"
    PORT: Final = "LAMEDUCK_PORT"
    APP_PORTS: Final = "LAMEDUCK_APP_PORTS"
    PROPAGATION_DELAY: Final = "LAMEDUCK_PROPAGATION_DELAY"
    QUIET_PERIOD: Final = "LAMEDUCK_QUIET_PERIOD"
    MAX_HOLD: Final = "LAMEDUCK_MAX_HOLD"
    DRAIN_TIMEOUT: Final = "LAMEDUCK_DRAIN_TIMEOUT"
    POLICY: Final = "LAMEDUCK_POLICY"
    NATIVE: Final = "LAMEDUCK_NATIVE"
    PROBES: Final = "LAMEDUCK_PROBES"
    LAME_DUCK: Final = "LAMEDUCK_LAME_DUCK"
    MAX_HOLD_CAP: Final = "LAMEDUCK_MAX_HOLD_CAP"
    # Never set by the operator: kubelet's own, and test or tuning knobs.
    API_URL: Final = "LAMEDUCK_API_URL"
    API_TOKEN_FILE: Final = "LAMEDUCK_API_TOKEN_FILE"
    API_CA_FILE: Final = "LAMEDUCK_API_CA_FILE"
    API_TIMEOUT: Final = "LAMEDUCK_API_TIMEOUT"
    FALLBACK_DELAY: Final = "LAMEDUCK_FALLBACK_DELAY"
    PROC_NET: Final = "LAMEDUCK_PROC_NET"
    KUBERNETES_SERVICE_HOST: Final = "KUBERNETES_SERVICE_HOST"
    KUBERNETES_SERVICE_PORT: Final = "KUBERNETES_SERVICE_PORT"
