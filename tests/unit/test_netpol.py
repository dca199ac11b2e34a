"""hack/netpol.sh, the e2e suite's NetworkPolicy enforcer (kube-router's firewall): it acts only on
the cluster its caller names, and `stop` removes what kube-router made and nothing else, in a
network namespace of the test's own (never this host's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.kube import wait_until
from tests.unit.repo_data import REPO

NETPOL = ["bash", str(REPO / "hack" / "netpol.sh")]
ROOT = os.geteuid() == 0
TOOLS = ("unshare", "nsenter", "iptables", "ipset")


def netpol(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NETPOL, *args], capture_output=True, text=True, env=dict(os.environ, **env), timeout=60, check=False
    )


def test_start_refuses_without_the_cluster_its_caller_names(tmp_path: Path) -> None:
    done = netpol("start", NETPOL_DIR=str(tmp_path))
    assert done.returncode != 0
    assert "NETPOL_KUBECONFIG is not set" in done.stderr
    assert not (tmp_path / "kube-router.pid").exists()


@pytest.fixture
def netns() -> Iterator[str]:
    """The pid of a process alone in a new network namespace, killed at the end."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not ROOT or missing:
        pytest.skip(f"needs root and {', '.join(TOOLS)} (missing: {', '.join(missing) or 'root'})")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "120"])
    try:
        # until unshare has made the namespace, the pid is in this host's
        wait_until(lambda: netns_of(str(holder.pid)) != netns_of("self"), 10, "unshare made a network namespace")
        yield str(holder.pid)
    finally:
        holder.kill()
        holder.wait(timeout=30)


def netns_of(pid: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def in_netns(pid: str, *command: str) -> str:
    assert netns_of(pid) != netns_of("self"), "never this host's network namespace"
    done = subprocess.run(
        ["nsenter", "--target", pid, "--net", "--", *command], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


# What kube-router's firewall leaves in the filter table, beside a chain of kube-proxy's and one
# of the harness's that must stay.
KUBE_ROUTER_AND_OTHERS = [
    ["-N", "KUBE-ROUTER-FORWARD"],
    ["-N", "KUBE-ROUTER-INPUT"],
    ["-N", "KUBE-POD-FW-ABCDEFGHIJKLMNOP"],
    ["-N", "KUBE-NWPLCY-DEFAULT"],
    ["-N", "KUBE-SERVICES"],
    ["-N", "LAMEDUCK-FWD"],
    ["-I", "FORWARD", "1", "-m", "comment", "--comment", "kube-router netpol - ABC", "-j", "KUBE-ROUTER-FORWARD"],
    ["-I", "INPUT", "1", "-m", "comment", "--comment", "kube-router netpol - DEF", "-j", "KUBE-ROUTER-INPUT"],
    ["-A", "FORWARD", "-j", "LAMEDUCK-FWD"],
    ["-A", "FORWARD", "-j", "KUBE-SERVICES"],
    ["-A", "KUBE-ROUTER-FORWARD", "-d", "10.0.0.5", "-j", "KUBE-POD-FW-ABCDEFGHIJKLMNOP"],
    ["-A", "KUBE-POD-FW-ABCDEFGHIJKLMNOP", "-j", "KUBE-NWPLCY-DEFAULT"],
    ["-A", "KUBE-ROUTER-FORWARD", "-m", "mark", "--mark", "0x20000/0x20000", "-j", "ACCEPT"],
]
IPSETS = ["KUBE-SRC-ABCDEFGHIJKLMNOP", "KUBE-DST-ABCDEFGHIJKLMNOP", "TMP-ABCDEFGHIJKLMNOP", "OTHERS"]


def fill(pid: str) -> None:
    for rule in KUBE_ROUTER_AND_OTHERS:
        in_netns(pid, "iptables", "-t", "filter", *rule)
    for name in IPSETS:
        in_netns(pid, "ipset", "create", name, "hash:ip")


def chains(pid: str) -> set[str]:
    rules = in_netns(pid, "iptables", "-t", "filter", "-S").splitlines()
    return {line.split()[1] for line in rules if line.startswith("-N ")}


def test_stop_after_a_start_removes_its_chains_jumps_and_ipsets_and_nothing_else(netns: str, tmp_path: Path) -> None:
    fill(netns)
    (tmp_path / "started").touch()  # what `start` leaves before it starts kube-router
    done = netpol("stop", NETPOL_DIR=str(tmp_path), NETPOL_NETNS_PID=netns)
    assert done.returncode == 0, done.stderr
    assert chains(netns) == {"KUBE-SERVICES", "LAMEDUCK-FWD"}
    forward = in_netns(netns, "iptables", "-t", "filter", "-S", "FORWARD").splitlines()
    assert forward == ["-P FORWARD ACCEPT", "-A FORWARD -j LAMEDUCK-FWD", "-A FORWARD -j KUBE-SERVICES"]
    assert in_netns(netns, "iptables", "-t", "filter", "-S", "INPUT").splitlines() == ["-P INPUT ACCEPT"]
    assert in_netns(netns, "ipset", "list", "-n").split() == ["OTHERS"]
    assert not (tmp_path / "started").exists(), "a second stop has nothing to remove"


def test_it_refuses_a_namespace_that_is_this_hosts(tmp_path: Path) -> None:
    (tmp_path / "started").touch()
    done = netpol("stop", NETPOL_DIR=str(tmp_path), NETPOL_NETNS_PID=str(os.getpid()))
    assert done.returncode != 0
    assert "in this host's network namespace" in done.stderr
    assert (tmp_path / "started").exists(), "nothing was done"


def test_stop_without_a_start_of_its_own_leaves_every_rule(netns: str, tmp_path: Path) -> None:
    fill(netns)
    before = in_netns(netns, "iptables", "-t", "filter", "-S")
    done = netpol("stop", NETPOL_DIR=str(tmp_path), NETPOL_NETNS_PID=netns)
    assert done.returncode == 0, done.stderr
    assert in_netns(netns, "iptables", "-t", "filter", "-S") == before
    assert sorted(in_netns(netns, "ipset", "list", "-n").split()) == sorted(IPSETS)


@pytest.mark.skipif(not ROOT, reason="hack/cluster.sh needs root")
def test_the_harness_starts_it_only_on_a_cluster_that_is_up(tmp_path: Path) -> None:
    env = dict(os.environ, LAMEDUCK_RUN_DIR=str(tmp_path / "run"))
    cluster = ["bash", str(REPO / "hack" / "cluster.sh")]
    stop = subprocess.run([*cluster, "netpol-stop"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert stop.returncode == 0
    assert "nothing to stop" in stop.stderr
    start = subprocess.run([*cluster, "netpol-start"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert start.returncode != 0
    assert "up first" in start.stderr
    assert not (tmp_path / "run").exists(), "neither made a run dir"
