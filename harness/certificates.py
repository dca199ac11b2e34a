"""A self-signed TLS certificate for the tests and benchmarks that serve HTTPS (openssl)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path, common_name: str, subject_alt_name: str) -> tuple[Path, Path]:
    """tls.crt and tls.key in folder, valid for 2 days; subject_alt_name as openssl takes it
    (DNS:name or IP:address). The certificate is its own CA bundle."""
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}"),
            *("-addext", f"subjectAltName={subject_alt_name}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
