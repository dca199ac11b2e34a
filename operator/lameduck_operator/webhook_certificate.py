"""The webhook's serving certificate: loaded from the mounted files, and replaced when they
change only by a pair that loads.

A rotated pair is loaded into a new SSLContext, never into the one being served: loading a
certificate and a key that do not match into a live context leaves it with the new certificate
and the old key, and every handshake fails from then on. New handshakes pick up the context
last loaded in the SNI callback (asyncio's server takes one context for good); a pair that
does not load is warned about and counted once, and the previous pair is served meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from enum import Enum
from pathlib import Path

from lameduck_operator.metrics import OperatorMetrics

log = logging.getLogger("lameduck.operator.webhook")


class Reload(Enum):
    """What one look at the files did."""

    UNCHANGED = "unchanged"  # the pair served, or one already refused
    RELOADED = "reloaded"
    REFUSED = "refused"  # a new pair that does not load: warned about and counted


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class ServingCertificate:
    """The context each new handshake gets. `listening` is the one to serve with; `reload`
    looks at the files again (kubelet rewrites a mounted Secret in place when it changes)."""

    def __init__(self, cert: Path, key: Path, metrics: OperatorMetrics) -> None:
        self.cert, self.key = cert, key
        self._metrics = metrics
        seen = self._fingerprint()
        # Raises OSError or ssl.SSLError: without a certificate there is no webhook to serve.
        self.listening = tls_context(cert, key)
        self.listening.sni_callback = self._choose
        self._current = self.listening
        self._served: object = seen
        self._refused: object = None

    def _choose(self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        # Called for every handshake, with or without a server name, before the certificate is sent.
        if self._current is not self.listening:
            connection.context = self._current

    def reload(self) -> Reload:
        """Load the files into a new context if they changed since the pair served (or the pair
        last refused), and serve it from the next handshake on if it loads."""
        # Taken before loading: files rewritten meanwhile differ from it, and are loaded next time.
        seen = self._fingerprint()
        if seen in (self._served, self._refused):
            return Reload.UNCHANGED
        try:
            fresh = tls_context(self.cert, self.key)
        except (OSError, ssl.SSLError) as err:
            self._refused = seen
            self._metrics.webhook_certificate_reload_failures.inc()
            log.warning(
                "kept serving the previous webhook certificate: %s and %s do not load as a pair: %s",
                self.cert,
                self.key,
                err,
            )
            return Reload.REFUSED
        self._current, self._served, self._refused = fresh, seen, None
        log.info("reloaded the webhook certificate from %s", self.cert)
        return Reload.RELOADED

    def _fingerprint(self) -> object:
        """What the files hold now: a digest of both (timestamps can repeat within a clock tick),
        or which one could not be read and why."""
        try:
            digest = hashlib.sha256()
            for path in (self.cert, self.key):
                digest.update(path.read_bytes())
                digest.update(b"\0")
            return digest.digest()
        except OSError as err:
            return (err.errno, err.filename)
