"""A rotated certificate is served from the next handshake on; a pair that does not load is
refused, warned about and counted once, and the pair before it is served meanwhile."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from pathlib import Path

import pytest

from harness.certificates import self_signed
from lameduck_operator.admission_server import AdmissionServer
from lameduck_operator.metrics import OperatorMetrics
from lameduck_operator.webhook_certificate import Reload, ServingCertificate
from tests.unit.test_admission_server import ANSWER_WAIT_SECONDS, eventually, post, rollout_review, serving

# The server looks at its files this often here (every 30 s in the operator).
RELOAD_SECONDS = 0.05
Pair = tuple[Path, Path]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pair, Pair]:
    """Two certificates for 127.0.0.1, each with its own key: the old one and the rotated one."""
    return (
        self_signed(tmp_path_factory.mktemp("old"), "127.0.0.1", "IP:127.0.0.1"),
        self_signed(tmp_path_factory.mktemp("new"), "127.0.0.1", "IP:127.0.0.1"),
    )


def mounted(folder: Path, cert: Path | None, key: Path | None) -> Pair:
    """tls.crt and tls.key in folder, copied from cert and key (removed for None), each replaced
    whole as kubelet replaces a Secret's files."""
    paths = folder / "tls.crt", folder / "tls.key"
    for source, path in zip((cert, key), paths, strict=True):
        if source is None:
            path.unlink(missing_ok=True)
            continue
        staged = path.with_suffix(".staged")
        staged.write_bytes(source.read_bytes())
        os.replace(staged, path)
    return paths


def failures(metrics: OperatorMetrics) -> float:
    return metrics.registry.get_sample_value("lameduck_webhook_certificate_reload_failures_total") or 0.0


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def served(server: AdmissionServer, trusted: Path) -> bytes:
    """The certificate a new handshake gets, trusting only `trusted`. Raises ssl.SSLError when it
    is another one (or the handshake fails)."""
    context = ssl.create_default_context(cafile=str(trusted))
    with (
        socket.create_connection(("127.0.0.1", server.bound_port or 0), timeout=ANSWER_WAIT_SECONDS) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def handshake_with(server: AdmissionServer, trusted: Path) -> bool:
    try:
        return served(server, trusted) == der(trusted)
    except ssl.SSLError:
        return False


def test_a_bad_rotation_keeps_the_old_certificate_served_and_a_good_one_is_then_picked_up(
    tmp_path: Path, pairs: tuple[Pair, Pair], metrics: OperatorMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    (old_cert, old_key), (new_cert, new_key) = pairs
    server = serving(mounted(tmp_path, old_cert, old_key), metrics, cert_reload_seconds=RELOAD_SECONDS)
    server.start()
    try:
        assert served(server, old_cert) == der(old_cert)
        # The certificate rotated, its key not (yet): no pair. Loaded into the live context, it
        # left the new certificate with the old key, and every handshake failed from then on.
        mounted(tmp_path, new_cert, old_key)
        eventually(lambda: failures(metrics) == 1, "the bad pair counted")
        assert served(server, old_cert) == der(old_cert)
        assert post(server, old_cert, rollout_review())[0] == 200
        mounted(tmp_path, new_cert, new_key)
        eventually(lambda: handshake_with(server, new_cert), "the new certificate served")
        assert post(server, new_cert, rollout_review())[0] == 200
    finally:
        server.stop()
    assert failures(metrics) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("lameduck")]
    assert len(warnings) == 1, "one warning for the one bad pair, however often it was looked at"


def test_each_pair_is_loaded_or_refused_once(
    tmp_path: Path, pairs: tuple[Pair, Pair], caplog: pytest.LogCaptureFixture
) -> None:
    (old_cert, old_key), (new_cert, new_key) = pairs
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    folder = tmp_path / "mounted"
    folder.mkdir()
    metrics = OperatorMetrics()
    certificate = ServingCertificate(*mounted(folder, old_cert, old_key), metrics)
    steps: list[tuple[str, Path | None, Path | None, Reload]] = [
        ("the pair served", old_cert, old_key, Reload.UNCHANGED),
        ("a certificate with another's key", new_cert, old_key, Reload.REFUSED),
        ("the same bad pair, looked at again", new_cert, old_key, Reload.UNCHANGED),
        ("another bad pair", old_cert, new_key, Reload.REFUSED),
        ("a key that is no key", old_cert, garbage, Reload.REFUSED),
        ("no key at all", old_cert, None, Reload.REFUSED),
        ("still none", old_cert, None, Reload.UNCHANGED),
        ("the pair served before, back", old_cert, old_key, Reload.UNCHANGED),
        ("a new pair", new_cert, new_key, Reload.RELOADED),
        ("the new pair, looked at again", new_cert, new_key, Reload.UNCHANGED),
        ("the old pair again: a rotation like any other", old_cert, old_key, Reload.RELOADED),
    ]
    outcomes = []
    for step, cert, key, _ in steps:
        mounted(folder, cert, key)
        outcomes.append((step, certificate.reload()))
    assert outcomes == [(step, outcome) for step, _, _, outcome in steps]
    refused = sum(outcome is Reload.REFUSED for *_, outcome in steps)
    assert failures(metrics) == refused
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == refused
