"""The Helm chart: it lints and renders with every ci/ values file, its schema rejects bad
values by name, and what it renders is what the operator and the API server need."""

from __future__ import annotations

import base64
import contextvars
import functools
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel

from harness.install import UNINSTALL_ARGS, upgrade_args
from harness.tools import HELMS, ToolUnusable, find_helm, harness_helm, helm_version
from lameduck_operator import __version__
from tests.unit.repo_data import REPO

CHART = REPO / "charts" / "lameduck"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
TYPO_VALUES = REPO / "tests" / "unit" / "helm" / "typo-values.yaml"
RELEASE = "lameduck"
NAMESPACE = "lameduck-system"

# Every variable the operator reads from its environment, and what the chart sets it to by default
# (None: taken from the pod's own metadata).
OPERATOR_ENV: dict[str, str | None] = {
    "LAMEDUCK_NAMESPACE": None,
    "LAMEDUCK_POD_NAME": None,
    "LAMEDUCK_SIDECAR_IMAGE": "lameduck/sidecar:0.1.0",
    "LAMEDUCK_SIDECAR_IMAGE_PULL_POLICY": "IfNotPresent",
    "LAMEDUCK_SIDECAR_PORT": "9901",
    "LAMEDUCK_NATIVE_SIDECAR": "true",
    "LAMEDUCK_SIDECAR_CPU_REQUEST": "10m",
    "LAMEDUCK_SIDECAR_MEMORY_REQUEST": "48Mi",
    "LAMEDUCK_SIDECAR_MEMORY_LIMIT": "96Mi",
    "LAMEDUCK_EXCLUDED_NAMESPACES": "",
    "LAMEDUCK_LOG_LEVEL": "INFO",
    "LAMEDUCK_HTTP_PORT": "8080",
    "LAMEDUCK_WEBHOOK_PORT": "9443",
    "LAMEDUCK_WEBHOOK_CERT_DIR": "/etc/lameduck/webhook",
    "LAMEDUCK_LEADER_ELECTION": "true",
    "LAMEDUCK_LEASE_NAME": "lameduck-operator",
    "LAMEDUCK_STATUS_INTERVAL_MS": "1000",
    "LAMEDUCK_RECONCILE_WORKERS": "8",
}

Doc = dict[str, Any]
PINNED_K8S = re.compile(r'^K8S_VERSION="\$\{K8S_VERSION:-([^}]+)\}"', re.MULTILINE)


# --- finding and running helm ---------------------------------------------------------------
# The tests that run helm run once with Helm 4 and once with Helm 3 (ids [helm4], [helm3]): each
# is marked @runs_helm, which gives it the fixture each_helm; helm() runs the binary that fixture
# chose, and fails a test that runs helm without it.

_HELM: contextvars.ContextVar[str] = contextvars.ContextVar("helm")


@functools.cache
def helm_binary(major: int) -> str:
    """helm `major` ($LAMEDUCK_HELM / $LAMEDUCK_HELM3, else the harness's build), which must say so."""
    variable = HELMS[major][1]
    hint = f"build it with `make helm` (hack/build-k8s.sh helm helm3), or point {variable} at a helm {major} binary"
    try:
        found = find_helm(major)
        if found is None:
            pytest.fail(f"helm {major} is not installed (not at {harness_helm(major)}): {hint}")
        version = helm_version(found)
    except ToolUnusable as err:
        pytest.fail(f"{err}; {hint}")
    if not version.startswith(f"v{major}."):
        pytest.fail(f"{found} is helm {version}, not helm {major}: {hint}")
    return found


@pytest.fixture(params=[4, 3], ids=["helm4", "helm3"])
def each_helm(request: pytest.FixtureRequest) -> Iterator[str]:
    binary = helm_binary(request.param)
    token = _HELM.set(binary)
    yield binary
    _HELM.reset(token)


runs_helm = pytest.mark.usefixtures("each_helm")


def current_helm() -> str:
    binary = _HELM.get(None)
    assert binary is not None, "this test runs helm: mark it @runs_helm"
    return binary


def run_helm(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """helm, the one this run of the test is for (@runs_helm)."""
    return run_helm(current_helm(), *args)


def _values_args(values: tuple[Path, ...], sets: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for file in values:
        args += ["-f", str(file)]
    for item in sets:
        args += ["--set", item]
    return args


@functools.cache
def _render(
    binary: str, values: tuple[Path, ...], sets: tuple[str, ...], release: str, namespace: str
) -> tuple[Doc, ...]:
    result = run_helm(binary, "template", release, str(CHART), "-n", namespace, *_values_args(values, sets))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(*values: Path, sets: tuple[str, ...] = (), release: str = RELEASE, namespace: str = NAMESPACE) -> list[Doc]:
    return list(_render(current_helm(), values, sets, release, namespace))


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[Doc]) -> set[str]:
    return {d["kind"] for d in docs}


def webhook(docs: list[Doc]) -> Doc:
    config = only(docs, "MutatingWebhookConfiguration")
    assert len(config["webhooks"]) == 1
    hook: Doc = config["webhooks"][0]
    return hook


def operator_container(docs: list[Doc]) -> Doc:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    container: Doc = pod["containers"][0]
    return container


def env_of(docs: list[Doc]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in operator_container(docs)["env"]}


def values_file(tmp_path: Path, values: Mapping[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return path


def ci(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


# --- the chart as a package ---------------------------------------------------------------


def test_the_chart_versions_are_the_operators() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == __version__
    assert chart["appVersion"] == __version__


def test_the_chart_crds_are_byte_for_byte_the_repositorys_crds() -> None:
    ours = {p.name: p.read_bytes() for p in (REPO / "crds").iterdir() if p.is_file()}
    charts = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir() if p.is_file()}
    assert sorted(charts) == sorted(ours), "charts/lameduck/crds/ holds other files than crds/: run make crds"
    stale = [name for name in ours if charts[name] != ours[name]]
    assert stale == [], f"charts/lameduck/crds/ differs from crds/ in {stale}: run make crds"


def test_there_are_ci_values_files_for_defaults_cert_manager_the_classic_sidecar_the_local_cluster_and_netpol() -> None:
    assert [p.name for p in CI_VALUES] == [
        "cert-manager-values.yaml",
        "classic-sidecar-values.yaml",
        "defaults-values.yaml",
        "local-values.yaml",
        "network-policy-values.yaml",
    ]


@runs_helm
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_the_chart_lints_with_each_ci_values_file(values: Path) -> None:
    result = helm("lint", str(CHART), "--strict", "-n", NAMESPACE, "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr


@runs_helm
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_the_chart_renders_the_operator_and_its_webhook_with_each_ci_values_file(values: Path) -> None:
    docs = render(values)
    assert {
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    } <= kinds(docs)
    namespaced = [d for d in docs if not d["kind"].startswith(("Cluster", "MutatingWebhook"))]
    assert {d["metadata"]["namespace"] for d in namespaced} == {NAMESPACE}


# --- Helm 4 and Helm 3 -----------------------------------------------------------------------


def _comparable(docs: tuple[Doc, ...]) -> dict[tuple[str, str], Doc]:
    """The rendered objects by kind and name (the two order the kinds they do not know, cert-manager's,
    differently), the freshly generated TLS material (new on every render) masked."""
    out = {}
    for rendered in docs:
        doc = json.loads(json.dumps(rendered))
        if doc["kind"] == "Secret":
            doc["data"] = dict.fromkeys(doc["data"], "generated")
        for hook in doc.get("webhooks") or []:
            if "caBundle" in hook["clientConfig"]:
                hook["clientConfig"]["caBundle"] = "generated"
        out[(doc["kind"], doc["metadata"]["name"])] = doc
    assert len(out) == len(docs), "two objects of one kind and name"
    return out


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_helm_4_and_helm_3_render_the_same_objects_with_each_ci_values_file(values: Path) -> None:
    with_4 = _comparable(_render(helm_binary(4), (values,), (), RELEASE, NAMESPACE))
    with_3 = _comparable(_render(helm_binary(3), (values,), (), RELEASE, NAMESPACE))
    assert sorted(with_4) == sorted(with_3)
    assert with_4 == with_3


@runs_helm
def test_the_chart_refuses_kubernetes_before_1_34_and_takes_the_pinned_release() -> None:
    pinned = PINNED_K8S.search((REPO / "hack" / "versions.env").read_text())
    assert pinned is not None
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == ">=1.34.0-0"
    for version in (pinned[1], "1.34.0", "1.36.1"):
        result = helm("template", RELEASE, str(CHART), "--kube-version", version)
        assert result.returncode == 0, f"Kubernetes {version} refused: {result.stderr}"
    for version in ("1.33.9", "1.30.0"):
        result = helm("template", RELEASE, str(CHART), "--kube-version", version)
        assert result.returncode != 0, f"Kubernetes {version} accepted"
        assert ">=1.34.0-0" in result.stderr, result.stderr


def test_the_readmes_state_the_kubernetes_floor_of_the_chart() -> None:
    assert "Kubernetes 1.34 or newer" in (CHART / "README.md").read_text()
    assert "Kubernetes 1.34 or newer" in (REPO / "README.md").read_text()


@runs_helm
@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_no_list_server_side_apply_merges_by_key_holds_a_key_twice(values: Path) -> None:
    # Helm 4 installs by server-side apply, which refuses a list with two items of one key
    # (two env vars of one name, say) where Helm 3's client-side apply took the last.
    pod = only(render(values), "Deployment")["spec"]["template"]["spec"]
    containers = pod["containers"] + pod.get("initContainers", [])
    keyed = {
        "containers": [c["name"] for c in containers],
        "volumes": [v["name"] for v in pod.get("volumes", [])],
    }
    for c in containers:
        keyed[f"{c['name']}.env"] = [e["name"] for e in c.get("env", [])]
        keyed[f"{c['name']}.ports"] = [(p["containerPort"], p.get("protocol", "TCP")) for p in c.get("ports", [])]
        keyed[f"{c['name']}.volumeMounts"] = [m["mountPath"] for m in c.get("volumeMounts", [])]
    assert keyed["operator.env"], "the operator has environment variables"
    twice = {where: keys for where, keys in keyed.items() if len(set(keys)) != len(keys)}
    assert twice == {}


def _unreachable_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig of an API server on a loopback port nothing listens on: helm parses its flags,
    loads the chart and stops at `cluster unreachable`, touching no cluster."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "none", "user": {"token": "none"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    return path


def _parses(command: list[str], tmp_path: Path) -> None:
    """helm takes `command` (after `helm`) as written: every flag known, none deprecated (Helm 4 still
    takes --atomic and --force, with a warning), every value where it goes."""
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path), "HELM_CONFIG_HOME": str(tmp_path)}
    env["HELM_DATA_HOME"] = str(tmp_path)
    env.pop("KUBECONFIG", None)
    done = subprocess.run(
        [current_helm(), "--kubeconfig", str(_unreachable_kubeconfig(tmp_path)), *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env=env,
    )
    assert done.returncode != 0
    assert "cluster unreachable" in done.stderr.lower(), f"helm {' '.join(command)}: {done.stderr}"
    assert "deprecated" not in done.stderr, f"helm {' '.join(command)}: {done.stderr}"


def _documented_helm_commands() -> list[list[str]]:
    """Every `helm ...` line of a sh block in the READMEs and docs/, continuation lines joined."""
    commands = []
    for doc in [REPO / "README.md", CHART / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"^```sh\n(.*?)^```", doc.read_text(), re.MULTILINE | re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                if line.startswith("helm "):
                    commands.append(shlex.split(line, comments=True)[1:])
    return commands


DOCUMENTED_HELM = _documented_helm_commands()


def test_the_readmes_document_install_upgrade_and_uninstall_with_helm() -> None:
    assert {c[0] for c in DOCUMENTED_HELM} == {"install", "upgrade", "uninstall"}


@runs_helm
@pytest.mark.parametrize("command", DOCUMENTED_HELM, ids=" ".join)
def test_every_helm_command_the_docs_show_is_one_helm_takes(command: list[str], tmp_path: Path) -> None:
    _parses(command, tmp_path)


@runs_helm
def test_the_harness_installs_and_uninstalls_with_flags_helm_takes(tmp_path: Path) -> None:
    upgrade = upgrade_args(str(CHART / "ci" / "local-values.yaml"), ["image.tag=dev", "logLevel=DEBUG"])
    assert upgrade[upgrade.index("--wait") + 1].startswith("--"), "--wait alone: Helm 4's watcher, Helm 3's wait"
    _parses(upgrade, tmp_path)
    _parses(["-n", NAMESPACE, *UNINSTALL_ARGS], tmp_path)
    for command in (upgrade, list(UNINSTALL_ARGS)):
        usage = helm(command[0], "--help").stdout
        flags = [a.split("=")[0] for a in command if a.startswith("--")]
        assert [f for f in flags if f"{f} " not in usage] == [], usage


# --- values the schema refuses ---------------------------------------------------------------


@runs_helm
def test_a_values_typo_fails_naming_the_key() -> None:
    for command in ("template", "lint"):
        args = [command, RELEASE, str(CHART)] if command == "template" else [command, str(CHART)]
        result = helm(*args, "-f", str(TYPO_VALUES))
        assert result.returncode != 0, f"helm {command} accepted replica: 2"
        assert "'replica'" in result.stdout + result.stderr, result.stdout + result.stderr


@runs_helm
@pytest.mark.parametrize(
    ("setting", "key"),
    [
        pytest.param("webhook.timeoutSeconds=11", "/webhook/timeoutSeconds", id="a webhook timeout of 11 s"),
        pytest.param("webhook.timeoutSeconds=0", "/webhook/timeoutSeconds", id="a webhook timeout of 0 s"),
        pytest.param("replicaCount=two", "/replicaCount", id="replicas as words"),
        pytest.param("logLevel=VERBOSE", "/logLevel", id="an unknown log level"),
        pytest.param("sidecar.port=70000", "/sidecar/port", id="a sidecar port out of range"),
        pytest.param("sidecar.native=yes", "/sidecar/native", id="native sidecar as a string"),
        pytest.param("image.pullPolicy=Sometimes", "/image/pullPolicy", id="an unknown pull policy"),
        pytest.param("excludedNamespaces[0]=Not_A_Namespace", "/excludedNamespaces/0", id="a bad namespace"),
        pytest.param("sidecar.resources.limits.cpu=1", "/sidecar/resources/limits", id="a sidecar limit not read"),
        pytest.param("webhook.timeout=5", "'timeout'", id="a typo inside webhook"),
        pytest.param("certManager.enable=true", "'enable'", id="a typo inside certManager"),
        pytest.param(
            "networkPolicy.webhook.from[0].ipBlok.cidr=10.0.0.0/8", "'ipBlok'", id="a typo in a network policy peer"
        ),
        pytest.param("networkPolicy.metrics.from[0].ipBlock.except[0]=x", "cidr", id="an ipBlock without a cidr"),
    ],
)
def test_the_schema_rejects_a_bad_value_naming_it(setting: str, key: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert key in result.stderr, result.stderr


def test_every_object_in_the_values_schema_refuses_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_objects: list[str] = []

    def walk(node: Mapping[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
            open_objects.append(path or "/")
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}/{name}")
        if isinstance(node.get("items"), Mapping):
            walk(node["items"], f"{path}/[]")

    walk(schema, "")
    assert open_objects == []


def test_every_value_is_documented_in_values_yaml_and_the_readme() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()

    def leaves(node: Mapping[str, Any], prefix: str) -> list[str]:
        out: list[str] = []
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and value and key != "resources":
                out += leaves(value, f"{name}.")
            else:
                out.append(name)
        return out

    names = leaves(values, "")
    assert "replicaCount" in names
    undocumented = [n for n in names if f"`{n}`" not in readme]
    assert undocumented == [], "values missing from the README's table"


# --- the operator ---------------------------------------------------------------


@runs_helm
def test_the_operator_gets_every_environment_variable_it_reads() -> None:
    docs = render(ci("defaults"))
    env = env_of(docs)
    assert env == OPERATOR_ENV
    by_name = {e["name"]: e for e in operator_container(docs)["env"]}
    assert by_name["LAMEDUCK_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert by_name["LAMEDUCK_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@runs_helm
def test_the_operator_environment_follows_the_values() -> None:
    docs = render(
        sets=(
            "sidecar.image.repository=registry.example/lameduck/sidecar",
            "sidecar.image.tag=0.2.0",
            "sidecar.image.pullPolicy=Always",
            "sidecar.port=9000",
            "sidecar.resources.requests.cpu=20m",
            "sidecar.resources.requests.memory=64Mi",
            "sidecar.resources.limits.memory=128Mi",
            "excludedNamespaces={legacy,batch}",
            "logLevel=DEBUG",
            "leaderElection.enabled=false",
            "statusIntervalMs=250000",
        )
    )
    env = env_of(docs)
    assert env["LAMEDUCK_SIDECAR_IMAGE"] == "registry.example/lameduck/sidecar:0.2.0"
    assert env["LAMEDUCK_SIDECAR_IMAGE_PULL_POLICY"] == "Always"
    assert env["LAMEDUCK_SIDECAR_PORT"] == "9000"
    assert env["LAMEDUCK_SIDECAR_CPU_REQUEST"] == "20m"
    assert env["LAMEDUCK_SIDECAR_MEMORY_REQUEST"] == "64Mi"
    assert env["LAMEDUCK_SIDECAR_MEMORY_LIMIT"] == "128Mi"
    assert env["LAMEDUCK_EXCLUDED_NAMESPACES"] == "legacy,batch"
    assert env["LAMEDUCK_LOG_LEVEL"] == "DEBUG"
    assert env["LAMEDUCK_LEADER_ELECTION"] == "false"
    assert env["LAMEDUCK_STATUS_INTERVAL_MS"] == "250000"
    assert "Role" not in kinds(docs), "no Lease access without leader election"


@runs_helm
def test_the_classic_sidecar_values_turn_the_native_sidecar_off() -> None:
    assert env_of(render(ci("classic-sidecar")))["LAMEDUCK_NATIVE_SIDECAR"] == "false"


@runs_helm
def test_the_local_values_run_the_dev_images_of_the_local_cluster() -> None:
    docs = render(ci("local"))
    container = operator_container(docs)
    assert container["image"] == "docker.io/lameduck/operator:dev"
    assert container["imagePullPolicy"] == "Never"
    env = env_of(docs)
    assert env["LAMEDUCK_SIDECAR_IMAGE"] == "docker.io/lameduck/sidecar:dev"
    assert env["LAMEDUCK_SIDECAR_IMAGE_PULL_POLICY"] == "IfNotPresent"


@runs_helm
def test_the_operator_image_defaults_to_the_app_version() -> None:
    container = operator_container(render(ci("defaults")))
    assert container["image"] == f"lameduck/operator:{__version__}"
    assert container["imagePullPolicy"] == "IfNotPresent"


DIGEST = "sha256:" + "ab" * 32
SIDECAR_DIGEST = "sha256:" + "cd" * 32


@runs_helm
def test_with_digests_both_images_are_referenced_by_digest_and_not_by_tag() -> None:
    docs = render(
        sets=(
            "image.repository=127.0.0.1:5000/lameduck/operator",
            "image.tag=0.1.0",
            f"image.digest={DIGEST}",
            "sidecar.image.repository=127.0.0.1:5000/lameduck/sidecar",
            f"sidecar.image.digest={SIDECAR_DIGEST}",
        )
    )
    assert operator_container(docs)["image"] == f"127.0.0.1:5000/lameduck/operator@{DIGEST}"
    assert env_of(docs)["LAMEDUCK_SIDECAR_IMAGE"] == f"127.0.0.1:5000/lameduck/sidecar@{SIDECAR_DIGEST}"


@runs_helm
@pytest.mark.parametrize("key", ["image.digest", "sidecar.image.digest"])
@pytest.mark.parametrize("digest", ["sha256:abc", "latest", "sha512:" + "ab" * 64, "SHA256:" + "ab" * 32])
def test_a_digest_that_is_not_a_sha256_is_rejected_naming_it(key: str, digest: str) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", f"{key}={digest}")
    assert result.returncode != 0, f"--set {key}={digest} was accepted"
    assert "/" + key.replace(".", "/") in result.stderr, result.stderr


@runs_helm
def test_the_operator_runs_two_spread_replicas_that_roll_one_at_a_time() -> None:
    deployment = only(render(ci("defaults")), "Deployment", "lameduck-operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pod["serviceAccountName"] == "lameduck-operator"


@runs_helm
def test_the_operator_pod_meets_the_restricted_pod_security_standard() -> None:
    docs = render(ci("defaults"))
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = operator_container(docs)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert not any("hostPath" in v for v in pod["volumes"])


@runs_helm
def test_the_operator_serves_probes_metrics_and_the_webhook_on_named_ports() -> None:
    docs = render(ci("defaults"))
    container = operator_container(docs)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "webhook": 9443}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["readinessProbe"]["periodSeconds"] == 2
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    (mount,) = container["volumeMounts"]
    assert mount == {"name": "webhook-tls", "mountPath": "/etc/lameduck/webhook", "readOnly": True}
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "webhook-tls", "secret": {"secretName": "lameduck-webhook-tls"}}]


@runs_helm
def test_the_services_reach_every_operator_pod_by_port_name() -> None:
    docs = render(ci("defaults"))
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    hook = only(docs, "Service", "lameduck-webhook")["spec"]
    metrics = only(docs, "Service", "lameduck-metrics")["spec"]
    for service in (hook, metrics):
        assert service["selector"].items() <= pod_labels.items()
    assert [(p["port"], p["targetPort"]) for p in hook["ports"]] == [(443, "webhook")]
    assert [(p["name"], p["port"], p["targetPort"]) for p in metrics["ports"]] == [("http-metrics", 8080, "http")]


@runs_helm
def test_no_network_policy_unless_enabled() -> None:
    assert "NetworkPolicy" not in kinds(render(ci("defaults")))


@runs_helm
def test_the_network_policy_lets_in_only_the_ports_the_operator_listens_on_from_their_peers() -> None:
    docs = render(ci("network-policy"))
    policy = only(docs, "NetworkPolicy", "lameduck-operator")
    assert policy["metadata"]["namespace"] == NAMESPACE
    spec = policy["spec"]
    assert spec["podSelector"] == only(docs, "Deployment")["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]
    listening = {p["name"]: p["containerPort"] for p in operator_container(docs)["ports"]}
    env = env_of(docs)
    assert listening == {"webhook": int(str(env["LAMEDUCK_WEBHOOK_PORT"])), "http": int(str(env["LAMEDUCK_HTTP_PORT"]))}
    by_port: dict[tuple[int, str], Any] = {}
    for rule in spec["ingress"]:
        (port,) = rule["ports"]  # one port per rule, each with its own peers
        by_port[port["port"], port["protocol"]] = rule.get("from")
    assert set(by_port) == {(listening["webhook"], "TCP"), (listening["http"], "TCP")}
    assert by_port[(listening["webhook"], "TCP")] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert by_port[(listening["http"], "TCP")] == [monitoring]


@runs_helm
def test_a_network_policy_port_without_peers_lets_in_any_source(tmp_path: Path) -> None:
    # The webhook by default: the API server, which no selector matches, calls it from an
    # address that depends on the cluster. A rule without `from` allows every source.
    values = values_file(tmp_path, {"networkPolicy": {"enabled": True, "metrics": {"from": []}}})
    (policy,) = [d for d in render(values) if d["kind"] == "NetworkPolicy"]
    assert [sorted(rule) for rule in policy["spec"]["ingress"]] == [["ports"], ["ports"]]


@runs_helm
def test_pod_labels_and_scheduling_values_reach_the_pods_but_never_change_the_selector(tmp_path: Path) -> None:
    node_affinity = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["system"]}]}]
        }
    }
    values = {
        "podLabels": {"team": "platform", "app.kubernetes.io/name": "other"},
        "podAnnotations": {"example.com/scrape": "true"},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        "affinity": {"nodeAffinity": node_affinity},
    }
    deployment = only(render(values_file(tmp_path, values)), "Deployment")["spec"]
    template = deployment["template"]
    assert template["metadata"]["labels"]["team"] == "platform"
    assert template["metadata"]["labels"]["app.kubernetes.io/name"] == "lameduck"
    assert deployment["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"] == {"example.com/scrape": "true"}
    assert template["spec"]["nodeSelector"] == {"pool": "system"}
    assert template["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    assert template["spec"]["affinity"] == {"nodeAffinity": node_affinity}, "set, affinity replaces the default"


@runs_helm
def test_an_annotation_that_is_not_a_string_is_rejected_naming_it(tmp_path: Path) -> None:
    result = helm("template", RELEASE, str(CHART), "-f", str(values_file(tmp_path, {"podAnnotations": {"a": True}})))
    assert result.returncode != 0
    assert "/podAnnotations/a" in result.stderr, result.stderr


@runs_helm
@pytest.mark.parametrize(("replicas", "budget"), [(1, False), (2, True), (3, True)])
def test_a_disruption_budget_keeps_one_operator_only_when_there_is_more_than_one(replicas: int, budget: bool) -> None:
    docs = render(sets=(f"replicaCount={replicas}",))
    assert only(docs, "Deployment")["spec"]["replicas"] == replicas
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert bool(pdbs) == budget
    if budget:
        assert pdbs[0]["metadata"]["name"] == "lameduck-operator"
        assert pdbs[0]["spec"]["minAvailable"] == 1


# --- access ---------------------------------------------------------------


def _rules(docs: list[Doc], kind: str) -> list[Doc]:
    return [rule for d in docs if d["kind"] == kind for rule in d["rules"]]


@runs_helm
def test_no_rule_of_the_operator_mentions_secrets() -> None:
    for values in CI_VALUES:
        docs = render(values)
        for rule in _rules(docs, "ClusterRole") + _rules(docs, "Role"):
            assert "secrets" not in rule["resources"], rule
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"], rule


# The rules of the ClusterRole and of the leader-election Role: tests/unit/test_access.py.


@runs_helm
def test_the_operator_is_bound_to_its_cluster_role_and_may_hold_its_lease_in_its_namespace() -> None:
    docs = render(ci("defaults"), namespace="ops")
    subject = {"kind": "ServiceAccount", "name": "lameduck-operator", "namespace": "ops"}
    account = only(docs, "ServiceAccount")["metadata"]
    assert (account["name"], account["namespace"]) == ("lameduck-operator", "ops")
    binding = only(docs, "ClusterRoleBinding", "lameduck-operator")
    assert binding["roleRef"]["name"] == only(docs, "ClusterRole")["metadata"]["name"] == "lameduck-operator"
    assert binding["subjects"] == [subject]
    role = only(docs, "Role", "lameduck-leader-election")
    assert role["metadata"]["namespace"] == "ops"
    role_binding = only(docs, "RoleBinding", "lameduck-leader-election")
    assert role_binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert role_binding["subjects"] == [subject]
    assert env_of(docs)["LAMEDUCK_LEASE_NAME"] == "lameduck-operator"


@runs_helm
@pytest.mark.parametrize(
    ("release", "sets", "prefix"),
    [
        pytest.param("lameduck", (), "lameduck", id="a release named lameduck"),
        pytest.param("prod-lameduck", (), "prod-lameduck", id="a release name containing lameduck"),
        pytest.param("prod", (), "prod-lameduck", id="another release name"),
        pytest.param("prod", ("fullnameOverride=ld",), "ld", id="fullnameOverride"),
    ],
)
def test_object_names_follow_the_release_name(release: str, sets: tuple[str, ...], prefix: str) -> None:
    docs = render(sets=sets, release=release)
    assert only(docs, "Deployment")["metadata"]["name"] == f"{prefix}-operator"
    assert only(docs, "MutatingWebhookConfiguration")["metadata"]["name"] == prefix
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Service"} == {f"{prefix}-webhook", f"{prefix}-metrics"}
    assert only(docs, "Secret")["metadata"]["name"] == f"{prefix}-webhook-tls"
    assert webhook(docs)["clientConfig"]["service"]["name"] == f"{prefix}-webhook"
    expression = next(c["expression"] for c in webhook(docs)["matchConditions"] if c["name"] == "not-lameduck")
    assert f"system:serviceaccount:{NAMESPACE}:{prefix}-operator" in expression


# --- the admission webhook ---------------------------------------------------------------


@runs_helm
def test_the_webhook_mutates_deployments_failing_open_without_side_effects() -> None:
    hook = webhook(render(ci("defaults")))
    assert hook["name"] == "deployments.lameduck.dev"
    assert hook["clientConfig"]["service"] == {
        "name": "lameduck-webhook",
        "namespace": NAMESPACE,
        "path": "/mutate/deployments",
        "port": 443,
    }
    assert hook["rules"] == [
        {
            "apiGroups": ["apps"],
            "apiVersions": ["v1"],
            "resources": ["deployments"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["reinvocationPolicy"] == "IfNeeded"


@runs_helm
def test_the_webhook_timeout_is_3_seconds_by_default_and_set_from_the_values() -> None:
    assert webhook(render(ci("defaults")))["timeoutSeconds"] == 3
    assert webhook(render(sets=("webhook.timeoutSeconds=10",)))["timeoutSeconds"] == 10


@runs_helm
def test_the_webhook_never_sees_system_namespaces_lameducks_own_or_excluded_ones() -> None:
    docs = render(sets=("excludedNamespaces={legacy,batch}",), namespace="ops")
    (expression,) = webhook(docs)["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    assert expression["values"] == ["kube-system", "kube-public", "kube-node-lease", "ops", "legacy", "batch"]
    assert env_of(docs)["LAMEDUCK_EXCLUDED_NAMESPACES"] == "legacy,batch"


_CEL = celpy.Environment()


def _admits(expression: str, request: Mapping[str, Any]) -> bool:
    activation = {
        "request": json_to_cel(dict(request)),
        "object": json_to_cel(request.get("object")),
        "oldObject": json_to_cel(request.get("oldObject")),
    }
    result = _CEL.program(_CEL.compile(expression)).evaluate(activation)
    assert not isinstance(result, Exception), f"{expression!r}: {result!r}"
    return bool(result)


def _deployment(image: str = "shop/api:1", annotations: Mapping[str, str] | None = None) -> Doc:
    metadata: Doc = {"name": "api", "namespace": "shop"}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    return {"metadata": metadata, "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": image}]}}}}


def _request(
    operation: str = "UPDATE",
    user: str = "alice",
    new: Doc | None = None,
    old: Doc | None = None,
) -> Doc:
    new = new if new is not None else _deployment("shop/api:2")
    if operation == "UPDATE" and old is None:
        old = _deployment("shop/api:1")
    return {"operation": operation, "userInfo": {"username": user}, "object": new, "oldObject": old}


@runs_helm
@pytest.mark.parametrize(
    ("request_", "called"),
    [
        pytest.param(_request(), True, id="a new image is a rollout"),
        pytest.param(_request("CREATE", old=None), True, id="a create"),
        pytest.param(
            _request(user="system:serviceaccount:lameduck-system:lameduck-operator"), False, id="lameduck's own write"
        ),
        pytest.param(
            _request(user="system:serviceaccount:other:lameduck-operator"), True, id="a namesake in another namespace"
        ),
        pytest.param(
            _request(new={**_deployment(), "spec": {**_deployment()["spec"], "replicas": 5}}, old=_deployment()),
            False,
            id="a scale leaves the template alone",
        ),
        pytest.param(_request(new=_deployment("a:2", {"lameduck.dev/skip": "true"})), False, id="opted out"),
        pytest.param(_request(new=_deployment("a:2", {"lameduck.dev/skip": "false"})), True, id="skip false"),
        pytest.param(_request(new=_deployment("a:2", {"team": "web"})), True, id="other annotations"),
        pytest.param(
            _request("CREATE", new=_deployment("a:1", {"lameduck.dev/skip": "true"})), False, id="created opted out"
        ),
    ],
)
def test_the_webhook_is_called_only_for_written_templates_of_deployments_not_opted_out_and_not_by_lameduck(
    request_: Doc, called: bool
) -> None:
    conditions = webhook(render(ci("defaults")))["matchConditions"]
    assert [c["name"] for c in conditions] == ["not-lameduck", "template-written", "not-opted-out"]
    assert all(_admits(c["expression"], request_) for c in conditions) == called


@runs_helm
def test_the_ca_bundle_is_the_ca_of_the_generated_secret() -> None:
    docs = render(ci("defaults"))
    secret = only(docs, "Secret", "lameduck-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert webhook(docs)["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]


def _handshake(secret: Doc, hostname: str) -> dict[str, Any]:
    """A TLS handshake as the API server makes it: trusting only ca.crt, asking for hostname."""
    pem = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(pem["tls.crt"])
        key.write_bytes(pem["tls.key"])
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cadata=pem["ca.crt"].decode())
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=hostname)
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        waiting = False
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                waiting = True
        server_in.write(to_server.read())
        to_client.write(server_out.read())
        if not waiting:
            peer = client.getpeercert()
            assert peer is not None
            return peer
    raise AssertionError("the TLS handshake did not finish")


@runs_helm
@pytest.mark.parametrize(
    "hostname",
    [
        "lameduck-webhook.lameduck-system.svc",
        "lameduck-webhook.lameduck-system",
        "lameduck-webhook",
        "lameduck-webhook.lameduck-system.svc.cluster.local",
    ],
)
def test_the_api_server_trusting_the_ca_bundle_accepts_the_webhook_certificate(hostname: str) -> None:
    _handshake(only(render(ci("defaults")), "Secret"), hostname)


@runs_helm
def test_the_webhook_certificate_is_refused_for_another_name() -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(only(render(ci("defaults")), "Secret"), "other-webhook.lameduck-system.svc")


@runs_helm
def test_the_webhook_certificate_is_valid_for_cert_validity_days() -> None:
    peer = _handshake(
        only(render(sets=("webhook.certValidityDays=30",)), "Secret"), "lameduck-webhook.lameduck-system.svc"
    )
    days_left = (ssl.cert_time_to_seconds(peer["notAfter"]) - time.time()) / 86400
    assert 29 < days_left <= 30


@runs_helm
def test_with_cert_manager_the_ca_is_injected_and_the_chart_renders_no_secret() -> None:
    docs = render(ci("cert-manager"))
    assert "Secret" not in kinds(docs)
    config = only(docs, "MutatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/lameduck-webhook"
    assert "caBundle" not in webhook(docs)["clientConfig"]
    serving = only(docs, "Certificate", "lameduck-webhook")["spec"]
    assert serving["secretName"] == "lameduck-webhook-tls"
    assert serving["dnsNames"] == [
        "lameduck-webhook",
        "lameduck-webhook.lameduck-system",
        "lameduck-webhook.lameduck-system.svc",
        "lameduck-webhook.lameduck-system.svc.cluster.local",
    ]
    ca_issuer = only(docs, "Issuer", serving["issuerRef"]["name"])
    assert serving["issuerRef"]["kind"] == "Issuer"
    ca = only(docs, "Certificate", "lameduck-ca")["spec"]
    assert ca["isCA"] is True
    assert ca_issuer["spec"] == {"ca": {"secretName": ca["secretName"]}}
    assert only(docs, "Issuer", ca["issuerRef"]["name"])["spec"] == {"selfSigned": {}}
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "Certificate"} == {"lameduck-ca", "lameduck-webhook"}


@runs_helm
def test_the_notes_say_what_was_installed_and_what_to_do_next(tmp_path: Path) -> None:
    # helm renders NOTES.txt only when it installs (a dry run too needs a cluster), so a copy of
    # the chart renders it as a ConfigMap.
    chart = tmp_path / "lameduck"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n'
    )
    result = helm("template", RELEASE, str(chart), "-n", NAMESPACE, "--show-only", "templates/notes.yaml")
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["data"]["notes"]
    assert "Deployment lameduck-operator" in notes
    assert "MutatingWebhookConfiguration lameduck" in notes
    assert "kubectl apply -f examples/policies/" in notes
    assert "kubectl get gracefulpolicies -A" in notes
    assert "README.md" in notes
