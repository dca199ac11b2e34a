"""The e2e matrix's reading of pytest's JUnit report and of hack/versions.env."""

from __future__ import annotations

from pathlib import Path

from bench.e2e_matrix import SuiteRun, junit_counts, table, versions_file

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="2" tests="7" time="12.5">
<testcase classname="tests.e2e.test_a" name="test_ok" time="1"/>
<testcase classname="tests.e2e.test_a" name="test_broken" time="1"><failure message="x">boom</failure></testcase>
<testcase classname="tests.e2e.test_b" name="test_setup" time="1"><error message="y">fixture</error></testcase>
<testcase classname="tests.e2e.test_b" name="test_skip" time="0"><skipped message="z"/></testcase>
</testsuite></testsuites>
"""


def test_counts_and_failed_tests_come_from_the_junit_report(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(REPORT)
    run = SuiteRun(requested_version="1.37.2")
    junit_counts(report, run)
    assert (run.tests, run.passed, run.failed, run.errors, run.skipped) == (7, 3, 1, 1, 2)
    assert run.failures == ["tests.e2e.test_a::test_broken", "tests.e2e.test_b::test_setup"]


def test_the_default_versions_are_the_oldest_and_the_newest_of_versions_env() -> None:
    versions = versions_file()
    oldest = tuple(int(p) for p in versions["K8S_OLDEST_VERSION"].split("."))
    newest = tuple(int(p) for p in versions["K8S_VERSION"].split("."))
    assert oldest <= newest
    assert versions["HELM_VERSION"].startswith("4.")


def test_the_table_names_a_run_that_never_started() -> None:
    run = SuiteRun(requested_version="1.99.0", problem="hack/cluster.sh up exited 1")
    shown = table([run])
    assert "1.99.0" in shown
    assert "exited 1" in shown
