"""Cosign-compatible signatures over module manifests, and their verification.

Formats as cosign writes and reads them (cosign `specs/SIGNATURE_SPEC.md`, `pkg/oci/static`,
`pkg/oci/remote/write.go`; sigstore `pkg/signature/payload`):

- payload: "simple signing" JSON naming the manifest digest, serialised like Go's `json.Marshal`
  (compact, keys in order, `"optional": null` without claims);
- signature: ECDSA P-256 over SHA-256 of the payload bytes, ASN.1 DER, standard base64;
- artifact: an OCI image manifest, config the `{}` blob, one layer the payload with the
  signature (keyless: and certificate and chain) as annotations. The tag flavour is stored as
  `sha256-<hex>.sig`; the referrer flavour adds `subject` and `artifactType`.

Unlike cosign there is no transparency log (Rekor) or timestamp to prove when a signature was
made, so a certificate must be valid at the `now` verification is given (cosign's
`--insecure-ignore-tlog`): a 10-minute keyless certificate verifies for those 10 minutes only,
unless the caller passes a signing time it recorded itself. Rekor bundles are ignored.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.artifacts.oci import Descriptor, canonical_json, check_digest, sha256_digest
from powernode.errors import Invalid, PowernodeError

COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
EMPTY_CONFIG = b"{}"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"

JsonScalar = str | int | bool | None
_GO_ESCAPES = {c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}
"""What Go's json.Marshal escapes that Python's json.dumps does not."""
_Verified = tuple[
    bytes, ec.EllipticCurvePublicKey, tuple[x509.Certificate, ...], str | None, str | None
]
_SHA256 = re.compile("sha256:[0-9a-f]{64}")


class ArtifactError(PowernodeError):
    """Root of the errors signing and trust raise."""


class ArtifactInvalid(ArtifactError, Invalid):
    title = "Invalid signing input"


class Rejection(enum.StrEnum):
    """Why a signature was not accepted."""

    MALFORMED = "malformed"
    UNKNOWN_SIGNER = "unknown-signer"
    """No certificate, and none of the keys given verifies it."""
    UNTRUSTED_CERTIFICATE = "untrusted-certificate"
    """Its certificate does not chain to a trusted root."""
    EXPIRED_CERTIFICATE = "expired-certificate"
    BAD_SIGNATURE = "bad-signature"
    """Its certificate's key does not verify the payload."""
    OTHER_DIGEST = "other-digest"
    """An authentic signature, over another manifest."""


class SignatureRejected(ArtifactError, Invalid):
    title = "Signature rejected"

    def __init__(self, reason: Rejection, detail: str) -> None:
        super().__init__(detail, reason=reason.value)
        self.reason = reason


def payload_for(
    digest: str, reference: str, optional: Mapping[str, JsonScalar] | None = None
) -> bytes:
    """The simple signing payload for manifest `digest` in repository `reference`."""
    check_digest(digest)
    if not reference or any(c.isspace() for c in reference):
        raise ArtifactInvalid(f"{reference!r} is not a repository reference")
    image, identity = {"docker-manifest-digest": digest}, {"docker-reference": reference}
    critical = {"identity": identity, "image": image, "type": COSIGN_SIGNATURE_TYPE}
    doc = {"critical": critical, "optional": None if optional is None else dict(optional)}
    text = canonical_json(doc).decode()  # Go's field order here is alphabetical too
    return re.sub("[<>&\u2028\u2029]", lambda m: _GO_ESCAPES[m.group()], text).encode()


def parse_payload(payload: bytes) -> str:
    """The manifest digest a cosign payload signs; `SignatureRejected` for any other payload.

    `critical.identity.docker-reference` must be there, but is not checked (as in cosign).
    """
    doc = _json_object(payload, "the payload")
    critical = doc.get("critical")
    if not isinstance(critical, dict) or critical.get("type") != COSIGN_SIGNATURE_TYPE:
        raise _malformed("the payload's critical.type is not 'cosign container image signature'")
    image, identity = critical.get("image"), critical.get("identity")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise _malformed("the payload names no sha256 critical.image.docker-manifest-digest")
    if not isinstance(reference, str) or not reference:
        raise _malformed("the payload has no critical.identity.docker-reference")
    if not isinstance(doc.get("optional", {}), dict | None):
        raise _malformed("the payload's optional is neither an object nor null")
    return digest


@dataclass(frozen=True)
class PayloadSignature:
    """A DER signature and, for keyless signers, the certificate binding its key and its chain."""

    signature: bytes
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()


class Signer(Protocol):
    """Whatever signs payloads: `KeySigner`, `keyless.KeylessSigner`."""

    def sign(self, payload: bytes, *, now: dt.datetime) -> PayloadSignature: ...


class KeySigner:
    """Signs with one long-lived ECDSA P-256 key; verifiers pin its public key.

    Keys are PKCS#8 PEM, optionally encrypted. cosign's own key files (scrypt + NaCl secretbox)
    are not read: make a key with `openssl genpkey -algorithm EC -pkeyopt
    ec_paramgen_curve:P-256`, and `cosign import-key-pair` it to use it with cosign too.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ArtifactInvalid(f"the signing key is on {private_key.curve.name}, not P-256")
        self._key = private_key

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> KeySigner:
        """Load a PKCS#8 (or SEC1) PEM key, encrypted with `password` if one is given."""
        if b"SIGSTORE PRIVATE KEY" in pem or b"COSIGN PRIVATE KEY" in pem:
            raise ArtifactInvalid(
                "cosign's encrypted key format is not supported; give a PKCS#8 PEM key"
            )
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except TypeError as exc:
            raise ArtifactInvalid(f"the key does not fit the password: {exc}") from None
        except (ValueError, UnsupportedAlgorithm):
            raise ArtifactInvalid("not a PEM private key, or the password is wrong") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ArtifactInvalid(f"the key is {type(key).__name__}; expected ECDSA P-256")
        return cls(key)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, payload: bytes, *, now: dt.datetime) -> PayloadSignature:
        return PayloadSignature(self._key.sign(payload, ec.ECDSA(hashes.SHA256())))


def signature_tag(digest: str) -> str:
    """The tag cosign stores a manifest's signatures under: `sha256-<hex>.sig`."""
    return check_digest(digest).replace(":", "-", 1) + ".sig"


@dataclass(frozen=True)
class SignatureArtifact:
    """A signature manifest ready to store: its bytes and digest, and the blobs it references."""

    manifest: bytes
    digest: str
    blobs: Mapping[str, bytes]
    tag: str | None
    """The tag flavour's tag; None for a referrer, which is found through its subject."""


@dataclass(frozen=True)
class SignatureBundle:
    """One signature over one manifest digest, to store in either flavour."""

    manifest_digest: str
    payload: bytes
    signature: PayloadSignature

    def tag_artifact(self) -> SignatureArtifact:
        """The manifest cosign finds under `signature_tag(manifest_digest)`."""
        return self._artifact({}, signature_tag(self.manifest_digest))

    def referrer_artifact(self, subject: Descriptor) -> SignatureArtifact:
        """The OCI 1.1 referrer: the same layer, with the module manifest as its `subject`."""
        if subject.digest != self.manifest_digest:
            raise ArtifactInvalid(f"the subject {subject.digest} is not {self.manifest_digest}")
        extra = {"artifactType": SIGNATURE_ARTIFACT_TYPE, "subject": subject.document()}
        return self._artifact(extra, None)

    def _artifact(self, extra: dict[str, Any], tag: str | None) -> SignatureArtifact:
        signed = self.signature
        annotations = {SIGNATURE_ANNOTATION: base64.b64encode(signed.signature).decode()}
        if signed.certificate is not None:
            leaf, *chain = [
                cert.public_bytes(serialization.Encoding.PEM).decode()
                for cert in (signed.certificate, *signed.chain)
            ]
            annotations |= {CERTIFICATE_ANNOTATION: leaf, CHAIN_ANNOTATION: "".join(chain)}
        layer = Descriptor.of(SIMPLE_SIGNING_MEDIA_TYPE, self.payload, annotations=annotations)
        config = Descriptor.of(OCI_CONFIG_MEDIA_TYPE, EMPTY_CONFIG)
        doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE, **extra}
        manifest = canonical_json(doc | {"config": config.document(), "layers": [layer.document()]})
        blobs = {config.digest: EMPTY_CONFIG, layer.digest: self.payload}
        return SignatureArtifact(manifest, sha256_digest(manifest), blobs, tag)


def sign_manifest(
    manifest_digest: str,
    reference: str,
    signer: Signer,
    *,
    now: dt.datetime,
    optional: Mapping[str, JsonScalar] | None = None,
) -> SignatureBundle:
    """Sign the cosign payload for `manifest_digest` with `signer`."""
    payload = payload_for(manifest_digest, reference, optional)
    return SignatureBundle(manifest_digest, payload, signer.sign(payload, now=now))


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that verified, and who made it."""

    digest: str
    public_key: ec.EllipticCurvePublicKey
    chain: tuple[x509.Certificate, ...]
    """Leaf first, ending at the trusted root; empty for a key signature."""
    identity: str | None
    """The certificate's email or URI subject alternative name."""
    issuer: str | None
    """The OIDC issuer in the certificate's Fulcio extensions."""
    source: str
    """The digest of the signature manifest it came from."""


@dataclass(frozen=True)
class RejectedSignature:
    reason: Rejection
    detail: str
    source: str


def check_signature_manifest(
    manifest: bytes,
    blobs: Mapping[str, bytes],
    expected_digest: str,
    *,
    public_keys: Sequence[ec.EllipticCurvePublicKey] = (),
    trusted_roots: Sequence[x509.Certificate] = (),
    now: dt.datetime,
) -> list[VerifiedSignature | RejectedSignature]:
    """The outcome for each signature (layer) in a signature manifest of either flavour.

    A key signature must verify with one of `public_keys`; a certificate signature needs a chain
    to one of `trusted_roots`, valid at `now` (see the module docstring), and its key must
    verify it. Either must sign a payload naming exactly `expected_digest`.
    """
    source = sha256_digest(manifest)
    try:
        layers = _json_object(manifest, "the signature manifest").get("layers")
        if not isinstance(layers, list) or not layers:
            raise _malformed("the signature manifest has no layers")
    except SignatureRejected as exc:
        return [RejectedSignature(exc.reason, exc.detail, source)]
    results: list[VerifiedSignature | RejectedSignature] = []
    for index, layer in enumerate(layers):
        try:
            payload, key, chain, identity, issuer = _verify_layer(
                layer, f"layer {index}", blobs, public_keys, trusted_roots, _utc(now)
            )
            signed = parse_payload(payload)
            if signed != expected_digest:
                raise SignatureRejected(
                    Rejection.OTHER_DIGEST, f"the signature is over {signed}, not {expected_digest}"
                )
        except SignatureRejected as exc:
            results.append(RejectedSignature(exc.reason, exc.detail, source))
            continue
        results.append(VerifiedSignature(signed, key, chain, identity, issuer, source))
    return results


def verify_signature_manifest(
    manifest: bytes,
    blobs: Mapping[str, bytes],
    expected_digest: str,
    *,
    public_keys: Sequence[ec.EllipticCurvePublicKey] = (),
    trusted_roots: Sequence[x509.Certificate] = (),
    now: dt.datetime,
) -> VerifiedSignature:
    """The first signature in the manifest that verifies; else `SignatureRejected` for the first."""
    results = check_signature_manifest(
        manifest,
        blobs,
        expected_digest,
        public_keys=public_keys,
        trusted_roots=trusted_roots,
        now=now,
    )
    for result in results:
        if isinstance(result, VerifiedSignature):
            return result
    rejected = [result for result in results if isinstance(result, RejectedSignature)]
    raise SignatureRejected(rejected[0].reason, rejected[0].detail)


def _verify_layer(
    doc: Any,
    where: str,
    blobs: Mapping[str, bytes],
    keys: Sequence[ec.EllipticCurvePublicKey],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> _Verified:
    """(payload, key, chain, identity, issuer) of a layer whose signature verifies."""
    try:
        layer = Descriptor.parse(doc, where=where)
    except Invalid as exc:
        raise _malformed(exc.detail) from None
    payload = blobs.get(layer.digest)
    if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE or payload is None:
        raise _malformed(f"{where} is not a simple signing payload present in the blobs")
    if sha256_digest(payload) != layer.digest or len(payload) != layer.size:
        raise _malformed(f"the payload blob of {where} does not match its digest or size")
    try:
        signature = base64.b64decode(layer.annotations[SIGNATURE_ANNOTATION], validate=True)
    except (KeyError, binascii.Error):
        raise _malformed(f"{where} has no base64 {SIGNATURE_ANNOTATION}") from None
    cert_pem = layer.annotations.get(CERTIFICATE_ANNOTATION)
    if cert_pem is None:
        for key in keys:
            if _verifies(key, signature, payload):
                return payload, key, (), None, None
        raise SignatureRejected(Rejection.UNKNOWN_SIGNER, "no trusted key verifies the signature")
    from powernode.artifacts.trust import check_certificate  # trust imports this module

    chain_pem = layer.annotations.get(CHAIN_ANNOTATION, "")
    key, chain, identity, issuer = check_certificate(cert_pem, chain_pem, roots, now)
    if not _verifies(key, signature, payload):
        raise SignatureRejected(Rejection.BAD_SIGNATURE, "the certificate's key does not verify it")
    return payload, key, chain, identity, issuer


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, payload: bytes) -> bool:
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """A JSON object from UTF-8 `data`, refusing duplicate keys (parsers disagree on those)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({key for key, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    try:
        doc = json.loads(data.decode(), object_pairs_hook=unique)
    except (ValueError, RecursionError) as exc:  # Unicode- and JSONDecodeError are ValueErrors
        raise _malformed(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _malformed(f"{what} is not a JSON object")
    return doc


def _malformed(detail: str) -> SignatureRejected:
    return SignatureRejected(Rejection.MALFORMED, detail)


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(dt.UTC)
