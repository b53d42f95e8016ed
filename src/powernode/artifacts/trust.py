"""Trust: which signatures a node accepts a module on.

Certificates: `check_certificate` accepts a keyless signing certificate only if it chains to one
of the trusted roots with code signing usage and is valid at `now` (see `signing` on why `now`),
and reads its identity (the email or URI subject alternative name) and OIDC issuer (Fulcio's
extensions, `FULCIO_ISSUER_V2` before `FULCIO_ISSUER_V1`).

Policy: a `TrustPolicy` per module pins public keys and lists (identity, issuer) regular
expression pairs. A signature satisfies it if it verified with a pinned key, or if its
certificate's identity and issuer both match one pair. Patterns are Python `re` syntax matched
against the whole string (`re.fullmatch`): `.*@example\\.com` does not match
`evil@example.com.attacker`; escape dots, or `.` matches any character. `evaluate` decides and
says why each other signature did not count; `verify_module` verifies and decides in one call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID

from powernode.artifacts.signing import (
    ArtifactError,
    ArtifactInvalid,
    RejectedSignature,
    Rejection,
    SignatureRejected,
    VerifiedSignature,
    check_signature_manifest,
)
from powernode.errors import Forbidden

FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
"""Fulcio's deprecated issuer extension: the raw UTF-8 bytes of the OIDC issuer URL."""
FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
"""Fulcio's issuer extension: the OIDC issuer URL as a DER UTF8String."""

_CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING
_CA_USAGES = {_CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
_AGNOSTIC = xv.Criticality.AGNOSTIC
_REJECTIONS = {
    Rejection.MALFORMED: "malformed signature",
    Rejection.UNKNOWN_SIGNER: "unknown signer",
    Rejection.UNTRUSTED_CERTIFICATE: "unknown signer (certificate from an untrusted CA)",
    Rejection.EXPIRED_CERTIFICATE: "expired certificate",
    Rejection.BAD_SIGNATURE: "bad signature",
    Rejection.OTHER_DIGEST: "signature over another digest",
}


class UntrustedArtifact(ArtifactError, Forbidden):
    title = "Untrusted artifact"


class TrustPolicy:
    """Who may sign one module: pinned public keys and (identity, issuer) pattern pairs.

    Raises `Invalid` naming the bad pattern or key; a policy that trusts nobody is refused too.
    Instances never change.
    """

    def __init__(
        self, identities: Iterable[tuple[str, str]] = (), public_keys: Iterable[str] = ()
    ) -> None:
        self._rules = tuple(
            (_compile(identity, f"identity pattern {n}"), _compile(issuer, f"issuer pattern {n}"))
            for n, (identity, issuer) in enumerate(identities, 1)
        )
        self._keys = tuple(_load_key(pem, n) for n, pem in enumerate(public_keys, 1))
        if not self._rules and not self._keys:
            raise ArtifactInvalid("a trust policy needs at least one identity or public key")

    @property
    def identities(self) -> tuple[tuple[str, str], ...]:
        return tuple((identity.pattern, issuer.pattern) for identity, issuer in self._rules)

    @property
    def public_keys(self) -> tuple[str, ...]:
        """The pinned keys as SubjectPublicKeyInfo PEM (the format of `cosign.pub`)."""
        return tuple(public_key_pem(key) for key in self._keys)

    @property
    def keys(self) -> tuple[ec.EllipticCurvePublicKey, ...]:
        return self._keys

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-ready data, for the database and the API."""
        identities = [{"identity": i, "issuer": s} for i, s in self.identities]
        return {"identities": identities, "public_keys": list(self.public_keys)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrustPolicy:
        """The policy `to_dict` gave; `Invalid` naming what is wrong with it."""
        unknown = sorted(set(data) - {"identities", "public_keys"})
        identities, keys = data.get("identities", []), data.get("public_keys", [])
        if unknown:
            raise ArtifactInvalid(f"unknown trust policy fields: {', '.join(unknown)}")
        if not isinstance(identities, list) or not all(
            isinstance(rule, dict) and set(rule) == {"identity", "issuer"} for rule in identities
        ):
            raise ArtifactInvalid("identities must be a list of {identity, issuer} objects")
        if not isinstance(keys, list):
            raise ArtifactInvalid("public_keys must be a list of PEM public keys")
        return cls([(rule["identity"], rule["issuer"]) for rule in identities], keys)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrustPolicy) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.identities, self.public_keys))

    def __repr__(self) -> str:
        return f"TrustPolicy(identities={self.identities!r}, keys={len(self._keys)})"

    def why_not(self, signature: VerifiedSignature) -> str | None:
        """None if `signature` satisfies the policy, else why not."""
        if signature.identity is None:
            if signature.public_key in self._keys:
                return None
            return f"unknown signer: key {key_fingerprint(signature.public_key)} is not pinned"
        if not self._rules:
            return "unknown signer: the policy trusts no certificate identities"
        rules = [rule for rule in self._rules if rule[0].fullmatch(signature.identity)]
        if not rules:
            return f"identity mismatch: {signature.identity!r} matches no identity pattern"
        issuer = signature.issuer or ""
        if not any(rule[1].fullmatch(issuer) for rule in rules):
            return f"issuer mismatch: {signature.identity!r} is not trusted from {issuer!r}"
        return None


@dataclass(frozen=True)
class Decision:
    """Whether a module may be used, and why each signature that did not count did not."""

    allowed: bool
    reasons: list[str]
    signer: str | None = None
    """Who satisfied the policy: a key fingerprint, or an identity and issuer."""

    def require(self, what: str) -> None:
        """Raise `UntrustedArtifact` (forbidden) naming `what` unless allowed."""
        if not self.allowed:
            raise UntrustedArtifact(
                f"{what} is not signed by a trusted signer: {'; '.join(self.reasons)}",
                reasons=self.reasons,
            )


def evaluate(
    policy: TrustPolicy,
    signatures: Iterable[VerifiedSignature | RejectedSignature],
    *,
    digest: str | None = None,
) -> Decision:
    """Decide on a module from its signatures' outcomes (`signing.check_signature_manifest`).

    With `digest`, a verified signature over any other digest does not count.
    """
    reasons: list[str] = []
    signer: str | None = None
    count = 0
    for count, signature in enumerate(signatures, 1):
        where = f"signature {count} ({signature.source})"
        if isinstance(signature, RejectedSignature):
            reasons.append(f"{where}: {_REJECTIONS[signature.reason]}: {signature.detail}")
        elif digest is not None and signature.digest != digest:
            reasons.append(f"{where}: signature over another digest: {signature.digest}")
        elif (why := policy.why_not(signature)) is not None:
            reasons.append(f"{where}: {why}")
        elif signer is None:
            signer = _describe(signature)
    if count == 0:
        reasons.append("there are no signatures")
    return Decision(signer is not None, reasons, signer)


def verify_module(
    policy: TrustPolicy,
    digest: str,
    signature_manifests: Iterable[tuple[bytes, Mapping[str, bytes]]],
    *,
    trusted_roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> Decision:
    """Verify the signature manifests (with their blobs) of manifest `digest`, then decide."""
    outcomes: list[VerifiedSignature | RejectedSignature] = []
    for manifest, blobs in signature_manifests:
        outcomes += check_signature_manifest(
            manifest, blobs, digest, public_keys=policy.keys, trusted_roots=trusted_roots, now=now
        )
    return evaluate(policy, outcomes, digest=digest)


def public_key_pem(key: ec.EllipticCurvePublicKey) -> str:
    """`key` as SubjectPublicKeyInfo PEM, the format of `cosign.pub` and of policies."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_bytes(serialization.Encoding.PEM, spki).decode()


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:` and the hex SHA-256 of the key's DER SubjectPublicKeyInfo."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return (
        "sha256:" + hashlib.sha256(key.public_bytes(serialization.Encoding.DER, spki)).hexdigest()
    )


def check_certificate(
    cert_pem: str, chain_pem: str, roots: Sequence[x509.Certificate], now: dt.datetime
) -> tuple[ec.EllipticCurvePublicKey, tuple[x509.Certificate, ...], str, str | None]:
    """(key, chain from leaf to root, identity, issuer) of a signing certificate valid at `now`.

    Raises `SignatureRejected`: untrusted unless it chains to one of `roots` with code signing
    usage; expired (said only of certificates that chain) unless it is valid at `now`.
    """
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
        intermediates = x509.load_pem_x509_certificates(chain_pem.encode()) if chain_pem else []
    except (ValueError, x509.InvalidVersion) as exc:
        raise _malformed(f"unreadable certificate or chain annotation: {exc}") from None
    if len(certs) != 1:
        raise _malformed(f"the certificate annotation holds {len(certs)} certificates, not 1")
    for cert in (*certs, *intermediates):
        # The byte before the signature counts the BIT STRING's padding bits. cryptography ignores
        # it; Go (so cosign) shifts the signature by it. Only 0 means the same to both.
        if cert.public_bytes(serialization.Encoding.DER)[-len(cert.signature) - 1]:
            raise _malformed("a certificate's signature has padding bits")
    leaf, now = certs[0], _utc(now)
    if not roots:
        raise SignatureRejected(Rejection.UNTRUSTED_CERTIFICATE, "no trusted roots are configured")
    valid_now = leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc
    # Outside its validity the chain is checked at the nearest moment inside: "expired" is said
    # only of certificates that chain to a trusted root.
    at = min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)
    ca_policy = xv.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, _AGNOSTIC, _ca_may_sign_code
    )
    leaf_policy = (
        xv.ExtensionPolicy.permit_all()
        .require_present(x509.ExtendedKeyUsage, _AGNOSTIC, _leaf_signs_code)
        .require_present(x509.KeyUsage, _AGNOSTIC, _leaf_signs)
        .require_present(x509.SubjectAlternativeName, _AGNOSTIC, None)
        .may_be_present(x509.BasicConstraints, _AGNOSTIC, _leaf_not_ca)
    )
    builder = xv.PolicyBuilder().store(xv.Store(list(roots))).time(at)
    builder = builder.extension_policies(ca_policy=ca_policy, ee_policy=leaf_policy)
    try:
        chain = tuple(builder.build_client_verifier().verify(leaf, intermediates).chain)
    except xv.VerificationError as exc:
        raise SignatureRejected(Rejection.UNTRUSTED_CERTIFICATE, f"untrusted: {exc}") from None
    if not valid_now:
        raise SignatureRejected(
            Rejection.EXPIRED_CERTIFICATE,
            f"the certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, not at {now:%Y-%m-%d %H:%M:%S}",
        )
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _malformed("the certificate's key is not ECDSA P-256")
    return key, chain, certificate_identity(leaf), certificate_issuer(leaf)


def certificate_identity(cert: x509.Certificate) -> str:
    """The one email or URI subject alternative name of a signing certificate."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise _malformed("the certificate has no subject alternative name") from None
    names = san.get_values_for_type(x509.RFC822Name)
    names += san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(names) != 1:
        raise _malformed(f"the certificate names {len(names)} email or URI identities, not 1")
    return names[0]


def certificate_issuer(cert: x509.Certificate) -> str | None:
    """The OIDC issuer in a certificate's Fulcio extensions (1.8, else 1.1); None without."""
    found: list[str] = []
    for oid in (FULCIO_ISSUER_V2, FULCIO_ISSUER_V1):
        try:
            ext = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        assert isinstance(ext, x509.UnrecognizedExtension)
        try:
            found.append(
                _from_utf8string(ext.value) if oid == FULCIO_ISSUER_V2 else ext.value.decode()
            )
        except ValueError:
            raise _malformed(f"the issuer extension {oid.dotted_string} is unreadable") from None
    if len(set(found)) > 1:
        raise _malformed(f"the certificate's issuer extensions disagree: {found}")
    return found[0] if found else None


def _from_utf8string(data: bytes) -> str:
    """The text of the DER UTF8String that is all of `data`."""
    if len(data) < 2 or data[0] != 0x0C:
        raise ValueError("not a UTF8String")
    length, start = data[1], 2
    if length & 0x80:
        start = 2 + (length & 0x7F)
        length = int.from_bytes(data[2:start], "big")
        if start == 2 or length < 0x80 or data[2] == 0:
            raise ValueError("not a DER length")
    if len(data) != start + length:
        raise ValueError("the length does not match the content")
    return data[start:].decode()


def _ca_may_sign_code(
    policy: xv.Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    # Fulcio's intermediates carry EKU codeSigning, which webpki's default policy refuses.
    if eku is not None and not _CA_USAGES & set(eku):
        raise ValueError("the CA may not issue code signing certificates")


def _leaf_signs_code(policy: xv.Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
    if _CODE_SIGNING not in eku:
        raise ValueError("the certificate is not for code signing")


def _leaf_signs(policy: xv.Policy, cert: x509.Certificate, usage: x509.KeyUsage) -> None:
    if not usage.digital_signature:
        raise ValueError("the certificate's key usage lacks digitalSignature")


def _leaf_not_ca(
    policy: xv.Policy, cert: x509.Certificate, constraints: x509.BasicConstraints | None
) -> None:
    if constraints is not None and constraints.ca:
        raise ValueError("a CA certificate cannot sign payloads")


def _describe(signature: VerifiedSignature) -> str:
    if signature.identity is None:
        return f"key {key_fingerprint(signature.public_key)}"
    return f"{signature.identity} from {signature.issuer}"


def _compile(pattern: object, what: str) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ArtifactInvalid(f"{what} is not a string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ArtifactInvalid(
            f"{what} {pattern!r} is not a valid regular expression: {exc}"
        ) from None


def _load_key(pem: object, n: int) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode()) if isinstance(pem, str) else None
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ArtifactInvalid(f"public key {n} is not an ECDSA P-256 public key in PEM")
    return key


def _malformed(detail: str) -> SignatureRejected:
    return SignatureRejected(Rejection.MALFORMED, detail)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(dt.UTC)
