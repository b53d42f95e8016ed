"""Checking a certificate signing request from a node before anything is issued for it.

A CSR proves possession of a key and carries that key; nothing else in it is trusted (the
subject and any requested extensions are ignored by the issuer). `check_csr` accepts a CSR only
if it parses, its self-signature verifies, and its key is one of `ALLOWED_KEYS`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from powernode.pki.errors import PkiInvalid

MAX_CSR_BYTES = 16 * 1024
"""A P-256 CSR is under 1 KiB; the limit keeps unauthenticated enrollment requests cheap."""

ALLOWED_KEYS = ("ECDSA P-256", "ECDSA P-384")
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_PEM_HEADER = b"-----BEGIN CERTIFICATE REQUEST-----"


def describe_key(key: CertificatePublicKeyTypes) -> str:
    """A short name for a public key, such as "ECDSA P-256" or "RSA-1024"."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {_CURVE_NAMES.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    return type(key).__name__.removeprefix("_")


def check_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """Parse and check a PEM CSR; raise `PkiInvalid` saying what is wrong."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise PkiInvalid(f"the CSR is {len(csr_pem)} bytes; at most {MAX_CSR_BYTES} are accepted")
    if _PEM_HEADER not in csr_pem:
        raise PkiInvalid(f"the CSR is not PEM: expected a '{_PEM_HEADER.decode()}' block")
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise PkiInvalid(f"the CSR could not be parsed: {exc}") from exc
    try:
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:  # unknown algorithm or broken encoding
        raise PkiInvalid(f"the CSR's public key could not be read: {exc}") from exc
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _ALLOWED_CURVES)):
        raise PkiInvalid(
            f"the CSR's key is {describe_key(key)}; node keys must be {' or '.join(ALLOWED_KEYS)}"
        )
    if not csr.is_signature_valid:
        raise PkiInvalid(
            "the CSR's signature does not verify with its own key: it was altered or forged"
        )
    return csr
