"""bench/e2e_kind.py reads hack/kind.sh's environment as the script prints it."""

from __future__ import annotations

import subprocess

from bench.e2e_kind import KIND, parse_env


def test_export_words_become_variables_with_path_prepended_to_the_callers() -> None:
    env = parse_env("export DOCKER_HOST=unix:///run/x.sock KUBECONFIG=/k PATH=/a:/b:$PATH\n", "/usr/bin")
    assert env == {"DOCKER_HOST": "unix:///run/x.sock", "KUBECONFIG": "/k", "PATH": "/a:/b:/usr/bin"}


def test_the_script_names_the_kubeconfig_and_the_audit_log_the_suite_reads() -> None:
    out = subprocess.run([*KIND, "env"], check=True, capture_output=True, text=True).stdout
    env = parse_env(out, "/usr/bin")
    assert {"KUBECONFIG", "LAMEDUCK_AUDIT_LOG", "DOCKER_HOST"} <= env.keys()
    assert env["PATH"].endswith(":/usr/bin")
