"""bench/e2e_kind.py reads hack/kind.sh's environment as the script prints it; tests/e2e/kind.yaml
agrees with what hack/kind.sh and the node image assume."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from bench.e2e_kind import KIND, parse_env
from bench.e2e_matrix import versions_file
from bench.provenance import REPO
from harness.kube import LOCAL_KUBECONFIG, is_kind, is_local


def test_export_words_become_variables_with_path_prepended_to_the_callers() -> None:
    env = parse_env("export DOCKER_HOST=unix:///run/x.sock KUBECONFIG=/k PATH=/a:/b:$PATH\n", "/usr/bin")
    assert env == {"DOCKER_HOST": "unix:///run/x.sock", "KUBECONFIG": "/k", "PATH": "/a:/b:/usr/bin"}


def test_the_script_names_the_kubeconfig_and_the_audit_log_the_suite_reads() -> None:
    out = subprocess.run([*KIND, "env"], check=True, capture_output=True, text=True).stdout
    env = parse_env(out, "/usr/bin")
    assert {"KUBECONFIG", "LAMEDUCK_AUDIT_LOG", "DOCKER_HOST"} <= env.keys()
    assert env["PATH"].endswith(":/usr/bin")


@pytest.mark.parametrize("names", [{}, {"LAMEDUCK_KIND_CACHE": "kind-cache", "KIND_CLUSTER": "other"}])
def test_the_suite_knows_the_kubeconfig_the_script_writes_for_kind_and_not_for_the_harness(
    names: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The NetworkPolicy test starts the enforcer through hack/kind.sh on the cluster whose
    kubeconfig this is (harness.kube.is_kind), with the same variables as the script reads."""
    for name in ("LAMEDUCK_KIND_CACHE", "KIND_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in names.items():
        monkeypatch.setenv(name, str(tmp_path / value) if name == "LAMEDUCK_KIND_CACHE" else value)
    out = subprocess.run([*KIND, "env"], check=True, capture_output=True, text=True).stdout
    kubeconfig = parse_env(out, "/usr/bin")["KUBECONFIG"]
    assert is_kind(kubeconfig)
    assert not is_local(kubeconfig)
    assert not is_kind(LOCAL_KUBECONFIG)


def kind_sh_value(name: str) -> str:
    line = next(x for x in (REPO / "hack" / "kind.sh").read_text().splitlines() if x.startswith(f"{name}="))
    return line.partition("=")[2]


def test_kind_yaml_subnets_are_the_ones_the_host_routes_and_the_node_cni_hands_out() -> None:
    config = yaml.safe_load((REPO / "tests" / "e2e" / "kind.yaml").read_text())
    cni = json.loads((REPO / "hack" / "kind-base" / "10-lameduck.conflist").read_text())
    subnet = cni["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
    pods = ipaddress.ip_network(config["networking"]["podSubnet"])
    assert str(pods) == kind_sh_value("POD_CIDR")
    assert config["networking"]["serviceSubnet"] == kind_sh_value("SERVICE_CIDR")
    assert ipaddress.ip_network(subnet).subnet_of(pods)  # type: ignore[arg-type]
    assert config["networking"]["disableDefaultCNI"] is True, "kindnetd's image is not in the node"


def test_kind_yaml_names_the_etcd_tag_the_node_image_preloads() -> None:
    tag = versions_file()["KIND_ETCD_TAG"]
    config = yaml.safe_load((REPO / "tests" / "e2e" / "kind.yaml").read_text())
    patches = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    cluster = next(p for p in patches if p["kind"] == "ClusterConfiguration")
    assert cluster["etcd"]["local"]["imageTag"] == tag
