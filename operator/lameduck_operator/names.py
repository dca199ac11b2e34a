"""Every name lameduck shares with the API server, other tools and its sidecar, defined once.

The API group and its kinds, the keys lameduck writes on other people's objects, the field
manager, and the operator-to-sidecar contract (the env the operator injects, the hold route,
the hold report's label and version). The sidecar has its own copy of its side
(`lameduck_sidecar.names`); tests/unit/test_sidecar_contract.py joins the two.
"""

from __future__ import annotations

from typing import Final

# The API
GROUP = "lameduck.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND_NAMESPACED = "GracefulPolicy"
KIND_CLUSTER = "ClusterGracefulPolicy"
POLICY_KINDS = (KIND_NAMESPACED, KIND_CLUSTER)
PLURALS = {KIND_NAMESPACED: "gracefulpolicies", KIND_CLUSTER: "clustergracefulpolicies"}
PLURAL_NAMESPACED = PLURALS[KIND_NAMESPACED]
PLURAL_CLUSTER = PLURALS[KIND_CLUSTER]

# Ownership: server-side apply's field manager; the one used once to take a field over.
FIELD_MANAGER = "lameduck"
TAKEOVER_MANAGER = f"{FIELD_MANAGER}-takeover"
# On each policy: removed once lameduck has taken its fields out of the Deployments.
FINALIZER = f"{GROUP}/revert"
# The reportingComponent of the Events the operator posts.
EVENT_COMPONENT = f"{GROUP}/operator"

# Keys on Deployments and pods
SKIP_ANNOTATION = f"{GROUP}/skip"
POLICY_ANNOTATION = f"{GROUP}/policy"
INTENT_ANNOTATION = f"{GROUP}/intent"
ADMITTED_ANNOTATION = f"{GROUP}/admitted"
TAKEN_OVER_ANNOTATION = f"{GROUP}/taken-over"
READINESS_CONDITION = f"{GROUP}/endpoints-ready"
# The API server's bound on one object's annotations: the UTF-8 bytes of every key and value
# together (apimachinery's TotalAnnotationSizeLimitB); a write past it is refused with a 422.
ANNOTATIONS_MAX_BYTES = 256 * 1024

# The sidecar's container, its Role and RoleBinding, and the labels on what lameduck creates.
SIDECAR_NAME = "lameduck"
SIDECAR_RBAC_NAME = "lameduck-sidecar"
PART_OF_LABEL = "app.kubernetes.io/part-of"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "lameduck", PART_OF_LABEL: "lameduck"}

# The operator-to-sidecar contract
HOLD_PATH_PREFIX = "/hold/"
REPORT_LABEL = f"{GROUP}/report"
REPORT_VALUE = "hold"
REPORT_SELECTOR = f"{REPORT_LABEL}={REPORT_VALUE}"
REPORT_VERSION = 1

# Per namespace, kept by the operator, read by the sidecar when a hold starts: one data key per
# Deployment name, its value JSON {"version": LEARNED_VERSION, "pooledDelaySeconds": <float>,
# "reports": <int>}, and "learnedMaxHoldSeconds": <int> when the Deployment's policy learns its budget
# (spec.hold.learnedBudget; a hold takes it live up to LAMEDUCK_MAX_HOLD_CAP, the webhook puts it
# in the template at the next rollout); a Deployment with no history at the starting budget has
# {"version": LEARNED_VERSION, "reports": 0, "learnedMaxHoldSeconds": <float>} (the sidecar's Role
# may get only this name).
LEARNED_CONFIGMAP = "lameduck-learned"
LEARNED_VERSION = 1


class LearnedField:
    """The keys of one Deployment's value in LEARNED_CONFIGMAP."""

    VERSION: Final = "version"
    POOLED_DELAY_SECONDS: Final = "pooledDelaySeconds"
    REPORTS: Final = "reports"
    # The learned maxHold (whole seconds), or with no report the starting budget: a hold reads it
    # as it starts (up to the cap), admission puts it in the template at the next rollout; absent
    # when the policy does not learn budgets.
    LEARNED_MAX_HOLD_SECONDS: Final = "learnedMaxHoldSeconds"


class ReportField:
    """Hold report fields the sidecar measures after release (optional: older sidecars omit them)."""

    LOST_AFTER_RELEASE: Final = "lostAfterRelease"
    POOLED_QUIET_SECONDS: Final = "pooledQuietSeconds"
    PINNED_UNTIL_CLOSED: Final = "pinnedUntilClosed"
    LEARNED_DELAY_SECONDS: Final = "learnedDelaySeconds"
    APP_EXIT_SECONDS: Final = "appExitSeconds"
    LAME_DUCK: Final = "lameDuckMode"
    LAST_LOSS_SECONDS: Final = "lastLossSeconds"
    HEADLESS_SERVICE: Final = "headlessService"


class LameDuckReport:
    """The sidecar's lameDuck report values (lameduck_sidecar.lame_duck.LameDuckState)."""

    ON: Final = "on"


class SidecarEnv:
    """The environment variables the operator sets on the sidecar (lameduck_sidecar.names.Env reads them).

    Plain strings, not an enum: they go into manifests that YAML and JSON dumpers write as they are."""

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
    # The app's lame-duck mode as <port><path> (8080/lameduck); unset when the policy names none.
    LAME_DUCK: Final = "LAMEDUCK_LAME_DUCK"
    MAX_HOLD_CAP: Final = "LAMEDUCK_MAX_HOLD_CAP"
