"""`lameduck`: try policies on manifests offline, before installing anything.

lameduck render -f policy.yaml -f deployment.yaml [--diff]
lameduck check  -f policies/ -f deployments/ [-o json]

The ConfigMap lameduck-learned of a namespace (`kubectl get configmap lameduck-learned -o yaml`)
given with them is what the operator learned there: with a policy's hold.learnedBudget, its
Deployments are decided with their learned maxHold, as the webhook and the reconciler decide.
Services, Ingresses, HTTPRoutes and GRPCRoutes given with them tell which Deployments an L7 hop
sends to: one with no learned maxHold starts at the policy's starting budget (none given: no
Deployment is an L7 backend).

Exit codes (docs: docs/policy.md, "Trying a policy offline"): 0 done (`check`: every
Deployment compliant, skipped or unmanaged; skipped includes left alone: a template too large,
no room for lameduck's annotations); 1 `check` found Deployments pending or conflicting;
2 the command could not run: a usage error, input that cannot be read as manifests (missing,
unreadable, too large, not YAML, too deep, aliases expanding too far, a key given twice, a
document that is no object), or its output closed early; 3 invalid objects: a policy the API
server would reject, or a Deployment or Namespace whose fields lameduck reads have the wrong
types or names; 4 an internal error, a bug in lameduck (--traceback shows where). Each failure
is one line on stderr, starting "lameduck", one per invalid field.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

import yaml

from lameduck_operator import __version__
from lameduck_operator.logic.admitted import injected
from lameduck_operator.logic.compliance import State
from lameduck_operator.logic.decision import Decision, Moment, decide
from lameduck_operator.logic.l7_backends import Route, deployment_is_l7_backend, is_service, route, route_kind_of
from lameduck_operator.logic.learning import parse_learned
from lameduck_operator.logic.readiness import ServiceView, service_view
from lameduck_operator.logic.selection import DeploymentRef, deployment_ref
from lameduck_operator.logic.shapes import deployment_errors, l7_errors, namespace_errors
from lameduck_operator.manifest_input import InputError, objects
from lameduck_operator.model import (
    NAMESPACE_MAX_LENGTH,
    NAMESPACE_PATTERN,
    FieldError,
    Policy,
    PolicyInvalid,
    PolicyRef,
    field_path,
    name_error,
    parse_policy,
)
from lameduck_operator.names import KIND_NAMESPACED, LEARNED_CONFIGMAP, POLICY_KINDS
from lameduck_operator.settings import DEFAULT_SIDECAR_IMAGE, Settings, SidecarSettings

EXIT_OK, EXIT_NOT_COMPLIANT, EXIT_BAD_INPUT, EXIT_INVALID_OBJECTS, EXIT_INTERNAL_ERROR = 0, 1, 2, 3, 4


class InvalidObjects(Exception):
    """Objects the API server would reject: one line each, exit code 3."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)


@dataclass
class Inputs:
    policies: list[Policy] = field(default_factory=list)
    deployments: list[dict[str, Any]] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    # The maxHold learned per Deployment, from lameduck-learned ConfigMaps given (as the operator
    # keeps it: a value it cannot read is no history).
    learned_max_hold: dict[DeploymentRef, float] = field(default_factory=dict)
    # The Services and L7 routes given: whether a Deployment is an L7 backend (none given: none is).
    services: list[ServiceView] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)


def _label(kind: str, obj: Mapping[str, Any]) -> str:
    """ "Kind name" for an error line, the name quoted if it is no plain one."""
    meta = obj.get("metadata")
    name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
    return field_path(kind, name).replace(".", " ", 1)


def load_inputs(args: Sequence[str], default_namespace: str, stdin: TextIO) -> Inputs:
    """The policies, Deployments and Namespaces of the arguments; raises InputError for input that
    cannot be read, InvalidObjects for objects the API server would reject."""
    inputs = Inputs()
    invalid: list[str] = []

    def reject(source: str, kind: str, obj: Mapping[str, Any], errors: Sequence[FieldError]) -> None:
        invalid.extend(f"{source}: {_label(kind, obj)}: {e}" for e in errors)

    for source, obj in objects(args, stdin):
        kind = obj.get("kind")
        if kind in POLICY_KINDS:
            meta = obj.get("metadata")
            if kind == KIND_NAMESPACED and isinstance(meta, dict):
                meta.setdefault("namespace", default_namespace)
            try:
                inputs.policies.append(parse_policy(obj))
            except PolicyInvalid as err:
                reject(source, str(kind), obj, err.errors)
        elif kind == "Deployment":
            if errors := deployment_errors(obj):
                reject(source, kind, obj, errors)
                continue
            obj["metadata"].setdefault("namespace", default_namespace)
            inputs.deployments.append(obj)
        elif kind == "ConfigMap":
            inputs.learned_max_hold.update(_learned_max_holds(obj, default_namespace))
        elif is_service(obj) or route_kind_of(obj) is not None:
            route_kind = route_kind_of(obj)
            if errors := l7_errors(obj, route_kind):
                reject(source, str(kind), obj, errors)
                continue
            obj["metadata"].setdefault("namespace", default_namespace)
            if route_kind is None:
                inputs.services.append(service_view(obj))
            else:
                inputs.routes.append(route(obj, route_kind))
        elif kind == "Namespace":
            if errors := namespace_errors(obj):
                reject(source, kind, obj, errors)
                continue
            meta = obj["metadata"]
            inputs.namespace_labels[meta["name"]] = dict(meta.get("labels") or {})
    if invalid:
        raise InvalidObjects(invalid)
    return inputs


def _learned_max_holds(config_map: Mapping[str, Any], default_namespace: str) -> dict[DeploymentRef, float]:
    """The learned maxHold of each Deployment in a lameduck-learned ConfigMap; nothing from any
    other ConfigMap."""
    meta, data = config_map.get("metadata"), config_map.get("data")
    if not isinstance(meta, Mapping) or meta.get("name") != LEARNED_CONFIGMAP or not isinstance(data, Mapping):
        return {}
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else default_namespace
    found = {}
    for name, value in data.items():
        learned = parse_learned(value)
        if isinstance(name, str) and learned is not None and learned.max_hold_seconds is not None:
            found[DeploymentRef(str(namespace), name)] = learned.max_hold_seconds
    return found


def no_rollouts(_: PolicyRef) -> int:
    """Offline, no rollout is in progress."""
    return 0


def decide_offline(
    deployment: Mapping[str, Any], inputs: Inputs, settings: Settings, moment: Moment = Moment.RECONCILE
) -> Decision:
    """The operator's decision for a manifest, as the reconciler (or, at Moment.ADMISSION, the
    webhook at the Deployment's next rollout) would take it."""
    namespace = deployment["metadata"]["namespace"]
    learned = inputs.learned_max_hold.get(deployment_ref(deployment))
    return decide(
        deployment,
        inputs.policies,
        settings,
        inputs.namespace_labels.get(namespace),
        no_rollouts,
        moment=moment,
        learned_max_hold=learned,
        l7_backend=deployment_is_l7_backend(deployment, namespace, inputs.services, inputs.routes),
    )


def _decide_all(
    inputs: Inputs, settings: Settings, moment: Moment = Moment.RECONCILE
) -> list[tuple[dict[str, Any], Decision]]:
    return [(d, decide_offline(d, inputs, settings, moment)) for d in inputs.deployments]


def rendered(deployment: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The Deployment as lameduck's admission webhook would make it at its next rollout;
    unchanged when nothing may be applied (a conflict, or skipped: no room for lameduck's
    annotations).

    lameduck's fields are recorded in the lameduck.dev/admitted annotation, as the webhook
    records them, so `check` of the output tells them from the manifest's own.
    """
    if decision.intent is None or decision.verdict.state in (State.CONFLICT, State.SKIPPED):
        return dict(deployment)
    return injected(deployment, decision.intent)


def _summary(decision: Decision) -> list[str]:
    v = decision.verdict
    lines = [f"{v.deployment}: {v.state} ({v.reason})" + (f" under {v.policy}" if v.policy else "")]
    if decision.plan is not None:
        plan = decision.plan
        lines.append(f"  budget {plan.budget_seconds}s, hold on: {', '.join(plan.app_containers) or '-'}")
        lines.extend(f"  takes over: {t}" for t in plan.taken_over)
    if v.message:
        lines.append(f"  {v.message}")
    lines.extend(f"  {loss}" for loss in decision.losses)
    return lines


def _dump(obj: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(obj), sort_keys=False, width=120)


def cmd_render(inputs: Inputs, settings: Settings, diff: bool, out: TextIO) -> int:
    # As the webhook makes it: a learned maxHold is applied at a rollout, whatever the Deployment carries.
    for deployment, decision in _decide_all(inputs, settings, Moment.ADMISSION):
        after = rendered(deployment, decision)
        out.write("".join(f"# {line}\n" for line in _summary(decision)))
        if diff:
            name = str(decision.verdict.deployment)
            out.writelines(
                difflib.unified_diff(
                    _dump(deployment).splitlines(keepends=True),
                    _dump(after).splitlines(keepends=True),
                    fromfile=f"{name} (given)",
                    tofile=f"{name} (with lameduck)",
                )
            )
            out.write("\n")
        else:
            out.write("---\n" + _dump(after))
    return EXIT_OK


def cmd_check(inputs: Inputs, settings: Settings, output: str, out: TextIO) -> int:
    results = [decision for _, decision in _decide_all(inputs, settings)]
    not_compliant = [d for d in results if d.verdict.state in (State.PENDING, State.CONFLICT)]
    if output == "json":
        rows = [
            {
                "namespace": ev.verdict.deployment.namespace,
                "name": ev.verdict.deployment.name,
                "policy": str(ev.verdict.policy) if ev.verdict.policy else None,
                "state": ev.verdict.state.value,
                "reason": ev.verdict.reason.value,
                "message": ev.verdict.message,
                "budgetSeconds": ev.budget_seconds,
                "lostPolicies": [str(loss) for loss in ev.losses],
            }
            for ev in results
        ]
        json.dump(rows, out, indent=2)
        out.write("\n")
    else:
        for ev in results:
            out.write("\n".join(_summary(ev)) + "\n")
        out.write(
            f"{len(results)} deployments, {len(results) - len(not_compliant)} without work, "
            f"{len(not_compliant)} pending or conflicting\n"
        )
    return EXIT_NOT_COMPLIANT if not_compliant else EXIT_OK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A usage error in one line, exit code 2 (argparse prints the whole usage first)."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _namespace(text: str) -> str:
    if name_error(text, "-n", NAMESPACE_PATTERN, NAMESPACE_MAX_LENGTH) is not None:
        raise argparse.ArgumentTypeError(f"not a namespace name: {json.dumps(text[:64])}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lameduck",
        description="Try lameduck policies on manifests, offline.",
        epilog="exit codes: 0 done; 1 check found Deployments pending or conflicting; 2 usage error, input that "
        "cannot be read, or output closed; 3 invalid policies, Deployments or Namespaces; 4 internal error",
    )
    parser.add_argument("--version", action="version", version=f"lameduck {__version__}")
    parser.add_argument("--traceback", action="store_true", help="on an internal error, print the traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="policy, Deployment, Namespace, Service and route (Ingress, HTTPRoute, GRPCRoute) manifests, and "
        "lameduck-learned ConfigMaps: a file, a directory, or - for stdin",
    )
    common.add_argument(
        "-n", "--namespace", default="default", type=_namespace, help="namespace of objects that name none"
    )
    common.add_argument("--sidecar-image", default=DEFAULT_SIDECAR_IMAGE, help="the sidecar image to inject")
    common.add_argument(
        "--classic-sidecar",
        action="store_true",
        help="inject the sidecar as a regular container (clusters without native sidecars)",
    )
    render = sub.add_parser("render", parents=[common], help="print Deployments as lameduck would make them")
    render.add_argument("--diff", action="store_true", help="print a unified diff instead of the manifests")
    check = sub.add_parser(
        "check", parents=[common], help="report each Deployment's compliance; exit 1 if any is pending or conflicting"
    )
    check.add_argument("-o", "--output", choices=("text", "json"), default="text")
    return parser


def _run(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    settings = Settings(sidecar=SidecarSettings(image=args.sidecar_image, native=not args.classic_sidecar))
    inputs = load_inputs(args.filename, args.namespace, stdin)
    if args.command == "render":
        return cmd_render(inputs, settings, args.diff, out)
    return cmd_check(inputs, settings, args.output, out)


def _fail(message: str) -> None:
    print(f"lameduck: {' '.join(message.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    """The exit code: see the module's docstring."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a usage error already printed
        return done.code if isinstance(done.code, int) else EXIT_BAD_INPUT
    try:
        return _run(args, stdin, out)
    except InputError as err:
        _fail(str(err))
        return EXIT_BAD_INPUT
    except InvalidObjects as err:
        for line in err.lines:
            _fail(line)
        return EXIT_INVALID_OBJECTS
    except BrokenPipeError:
        if out is sys.stdout:  # nothing more reaches it, nor the interpreter's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _fail("the output was closed before all of it was written")
        return EXIT_BAD_INPUT
    except Exception as err:
        if args.traceback:
            raise
        _fail(f"internal error, a bug in lameduck {__version__} (--traceback shows where): {type(err).__name__}: {err}")
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
