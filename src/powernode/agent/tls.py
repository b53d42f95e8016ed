"""TLS contexts for the node API.

The server is verified against the root CA only (the seed's `ca`); its certificate is issued by
the intermediate, which the server sends along. The client presents its certificate followed by
the intermediate (`cert.pem` + `chain.pem`) so that a server trusting only the root can build the
chain. The stdlib `ssl` module loads a certificate chain only from a file, so the bundle is
written to a private temporary file in the (0700) state directory and removed right after.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path


def server_context(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts `ca_pem` and presents no certificate (for enrollment)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def mutual_context(
    ca_pem: str, cert_pem: str, chain_pem: str, key_path: Path, *, scratch: Path
) -> ssl.SSLContext:
    """A client context that trusts `ca_pem` and presents cert + chain with the key at key_path.

    ssl.SSLError if the key does not match the certificate.
    """
    context = server_context(ca_pem)
    _load_chain(context, cert_pem + "\n" + chain_pem, key_path, scratch)
    return context


def key_matches(cert_pem: str, key_path: Path, *, scratch: Path) -> bool:
    """Whether the private key at `key_path` belongs to the certificate `cert_pem`."""
    try:
        _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_pem, key_path, scratch)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def _load_chain(context: ssl.SSLContext, bundle: str, key_path: Path, scratch: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".bundle.", suffix=".pem", dir=scratch)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(bundle)
        context.load_cert_chain(certfile=name, keyfile=key_path)
    finally:
        os.unlink(name)
