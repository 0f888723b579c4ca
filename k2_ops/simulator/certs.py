"""Per-run TLS material made with trustme: a CA and server certificates for the three cert modes.

- valid: signed by the run's CA, for localhost and 127.0.0.1 (the CA file is what clients trust);
- wrong_host: signed by the same CA but only for `wrong-host.invalid`, so hostname checks fail;
- unknown_ca: for localhost and 127.0.0.1 but signed by a second CA nobody is given.

The server socket uses the "valid" context; its SNI callback swaps in the context of the current mode,
so a mode change affects new connections only (the callback runs for every ClientHello, SNI or not).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme

SERVER_IDENTITIES = ("localhost", "127.0.0.1")
WRONG_HOST = "wrong-host.invalid"


@dataclass(frozen=True)
class TlsMaterial:
    ca_file: Path
    contexts: dict[str, ssl.SSLContext]

    def listening_context(self, current_mode: Callable[[], str]) -> ssl.SSLContext:
        """The context for the server socket; each handshake switches to `contexts[current_mode()]`."""
        front = self.contexts["valid"]

        def choose(ssl_object: ssl.SSLObject, _server_name: str | None, _context: ssl.SSLContext) -> None:
            mode = current_mode()
            if mode != "valid":
                ssl_object.context = self.contexts[mode]

        front.sni_callback = choose
        return front


def _server_context(leaf: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    leaf.configure_cert(context)
    return context


def create_tls_material(workdir: Path, extra_identities: tuple[str, ...] = ()) -> TlsMaterial:
    """Generate the CAs and certificates (the valid one also for `extra_identities`); write the trusted CA to
    `workdir/ca.pem`."""
    workdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="K2 Binance simulator CA")
    stranger_ca = trustme.CA(organization_name="K2 simulator unknown CA")
    contexts = {
        "valid": _server_context(ca.issue_cert(*SERVER_IDENTITIES, *extra_identities)),
        "wrong_host": _server_context(ca.issue_cert(WRONG_HOST)),
        "unknown_ca": _server_context(stranger_ca.issue_cert(*SERVER_IDENTITIES)),
    }
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TlsMaterial(ca_file=ca_file, contexts=contexts)


def client_ssl_context(ca_file: Path | str) -> ssl.SSLContext:
    """A verifying client context trusting only the simulator's CA (what a client of the simulator builds)."""
    return ssl.create_default_context(cafile=str(ca_file))
