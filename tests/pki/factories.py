"""Keys, CSRs, certificates and an `openssl` runner for the PKI tests; keyword overrides only."""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import textwrap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

PASSPHRASE = b"correct horse battery staple"


def new_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key, as the agent makes one."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def make_csr(
    key: CertificateIssuerPrivateKeyTypes | None = None,
    *,
    common_name: str = "mallory",
    dns_names: tuple[str, ...] = (),
    ca: bool = False,
) -> bytes:
    """A PEM CSR on `key` (a fresh P-256 key by default) asking for whatever it is told to."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    key = key or new_key()
    # Ed25519 and Ed448 sign without a separate hash.
    eddsa = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    csr = builder.sign(key, None if eddsa else hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def pem(der: bytes, label: str) -> bytes:
    """DER wrapped as PEM with `label` (such as "CERTIFICATE REQUEST")."""
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def tampered_csr(csr_pem: bytes, old: bytes, new: bytes) -> bytes:
    """The CSR with `old` replaced by `new` (same length) in its signed part."""
    assert len(old) == len(new)
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert der.count(old) == 1
    return pem(der.replace(old, new), "CERTIFICATE REQUEST")


def self_signed(
    *,
    common_names: tuple[str, ...] = ("node-1",),
    uris: tuple[str, ...] | None = ("powernode://node/node-1",),
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A throwaway self-signed certificate naming anything; `uris=None` leaves out the SAN."""
    key = new_key()
    now = now or dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in common_names])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if uris is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real `openssl` command; never raises on a non-zero exit."""
    binary = shutil.which("openssl")
    assert binary is not None, "the PKI tests need the openssl command"
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, check=False, timeout=30
    )
