"""Cosign-format payloads, signatures and signature manifests, and what verification refuses."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from powernode.artifacts.keyless import KeylessSigner, SigningAuthority
from powernode.artifacts.oci import Descriptor, canonical_json
from powernode.artifacts.signing import (
    CERTIFICATE_ANNOTATION,
    CHAIN_ANNOTATION,
    SIGNATURE_ANNOTATION,
    ArtifactInvalid,
    KeySigner,
    RejectedSignature,
    Rejection,
    SignatureArtifact,
    SignatureRejected,
    VerifiedSignature,
    check_signature_manifest,
    parse_payload,
    payload_for,
    sign_manifest,
    verify_signature_manifest,
)
from powernode.errors import Category
from powernode.pki import CertificateAuthority

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "sha256:" + hashlib.sha256(b"module manifest").hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"another manifest").hexdigest()
REFERENCE = "registry.example.com/modules/nginx"
IDENTITY, ISSUER = "alice@example.com", "https://idp.example.com"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SigningAuthority:
    created = NOW - dt.timedelta(days=1)
    return SigningAuthority.load_or_create(tmp_path_factory.mktemp("signing"), b"pw", now=created)


@pytest.fixture
def key_signer() -> KeySigner:
    return KeySigner(ec.generate_private_key(ec.SECP256R1()))


def keyless_artifact(authority: SigningAuthority, *, now: dt.datetime = NOW) -> SignatureArtifact:
    signer = KeylessSigner(authority, IDENTITY, ISSUER)
    return sign_manifest(DIGEST, REFERENCE, signer, now=now).tag_artifact()


def layer_of(artifact: SignatureArtifact) -> tuple[bytes, dict[str, str]]:
    """The payload and the annotations of the artifact's one layer."""
    layer = json.loads(artifact.manifest)["layers"][0]
    return artifact.blobs[layer["digest"]], layer["annotations"]


def rewrap(payload: bytes, annotations: Mapping[str, str]) -> tuple[bytes, dict[str, bytes]]:
    """A signature manifest around `payload`, as someone tampering with it would rebuild it."""
    layer = Descriptor.of(
        "application/vnd.dev.cosign.simplesigning.v1+json", payload, annotations=annotations
    )
    config = Descriptor.of("application/vnd.oci.image.config.v1+json", b"{}")
    manifest = {"schemaVersion": 2, "config": config.document(), "layers": [layer.document()]}
    return canonical_json(manifest), {layer.digest: payload, config.digest: b"{}"}


def check(
    manifest: bytes,
    blobs: Mapping[str, bytes],
    *,
    keys: tuple[ec.EllipticCurvePublicKey, ...] = (),
    roots: tuple[x509.Certificate, ...] = (),
    digest: str = DIGEST,
    now: dt.datetime = NOW,
) -> VerifiedSignature | RejectedSignature:
    (outcome,) = check_signature_manifest(
        manifest, blobs, digest, public_keys=keys, trusted_roots=roots, now=now
    )
    return outcome


def flipped(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def cert_pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def test_the_payload_is_cosigns_simple_signing_json_byte_for_byte() -> None:
    """The payload has cosign's field names and Go's compact serialisation, optional null."""
    payload = payload_for(DIGEST, REFERENCE)
    assert json.loads(payload) == {
        "critical": {
            "identity": {"docker-reference": "registry.example.com/modules/nginx"},
            "image": {"docker-manifest-digest": DIGEST},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"registry.example.com/modules/nginx"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_optional_claims_are_sorted_and_escaped_as_go_does() -> None:
    """Claims come out with sorted keys and `<`, `>`, `&` escaped like Go's json.Marshal."""
    payload = payload_for(DIGEST, REFERENCE, {"tool": "a<b>&c", "build": 7})
    assert payload.endswith(b'"optional":{"build":7,"tool":"a\\u003cb\\u003e\\u0026c"}}')
    assert json.loads(payload)["optional"] == {"build": 7, "tool": "a<b>&c"}


def test_parse_payload_returns_the_signed_digest() -> None:
    assert parse_payload(payload_for(DIGEST, REFERENCE)) == DIGEST


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (payload_for(DIGEST, REFERENCE).replace(b"cosign container", b"atomic container"), "type"),
        (payload_for(DIGEST, REFERENCE).replace(b"docker-manifest-digest", b"digest"), "digest"),
        (payload_for(DIGEST, REFERENCE).replace(b"sha256:", b"sha999:"), "digest"),
        (payload_for(DIGEST, REFERENCE).replace(b"docker-reference", b"reference"), "reference"),
        (payload_for(DIGEST, REFERENCE)[:-1] + b',"optional":{}}', "JSON"),
        (b"[]", "object"),
        (b"\xff", "JSON"),
    ],
    ids=["wrong-type", "no-digest", "bad-digest", "no-reference", "duplicate-key", "array", "utf8"],
)
def test_parse_payload_refuses_anything_but_a_cosign_payload(
    payload: bytes, complaint: str
) -> None:
    with pytest.raises(SignatureRejected, match=complaint) as caught:
        parse_payload(payload)
    assert caught.value.reason is Rejection.MALFORMED


def test_the_signature_is_base64_der_ecdsa_p256_sha256_over_the_payload(
    key_signer: KeySigner,
) -> None:
    payload, annotations = layer_of(
        sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    )
    signature = base64.b64decode(annotations[SIGNATURE_ANNOTATION], validate=True)
    key_signer.public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    assert set(annotations) == {SIGNATURE_ANNOTATION}


def test_the_tag_flavour_is_cosigns_signature_image(key_signer: KeySigner) -> None:
    """One simple signing layer, the `{}` config, stored as `sha256-<hex>.sig`, no subject."""
    artifact = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    manifest = json.loads(artifact.manifest)
    payload, annotations = layer_of(artifact)
    empty = "sha256:" + hashlib.sha256(b"{}").hexdigest()
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": empty,
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
                "size": len(payload),
                "annotations": annotations,
            }
        ],
    }
    assert artifact.tag == "sha256-" + DIGEST.removeprefix("sha256:") + ".sig"
    assert artifact.manifest == canonical_json(manifest)
    assert artifact.digest == "sha256:" + hashlib.sha256(artifact.manifest).hexdigest()
    assert artifact.blobs == {empty: b"{}", manifest["layers"][0]["digest"]: payload}


def test_the_referrer_flavour_adds_subject_and_artifact_type_to_the_same_layer(
    key_signer: KeySigner,
) -> None:
    bundle = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW)
    subject = Descriptor(OCI_MANIFEST, DIGEST, 1234)
    referrer, tagged = bundle.referrer_artifact(subject), bundle.tag_artifact()
    manifest = json.loads(referrer.manifest)
    assert manifest.pop("artifactType") == "application/vnd.dev.cosign.artifact.sig.v1+json"
    assert manifest.pop("subject") == {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 1234}
    assert manifest == json.loads(tagged.manifest)
    assert referrer.tag is None
    assert referrer.blobs == tagged.blobs


def test_a_referrer_cannot_name_another_subject(key_signer: KeySigner) -> None:
    bundle = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW)
    with pytest.raises(ArtifactInvalid):
        bundle.referrer_artifact(Descriptor(OCI_MANIFEST, OTHER_DIGEST, 1))


@pytest.mark.parametrize("flavour", ["tag", "referrer"])
def test_a_key_signature_verifies_with_its_public_key(key_signer: KeySigner, flavour: str) -> None:
    bundle = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW)
    artifact = (
        bundle.tag_artifact()
        if flavour == "tag"
        else bundle.referrer_artifact(Descriptor(OCI_MANIFEST, DIGEST, 1))
    )
    verified = verify_signature_manifest(
        artifact.manifest, artifact.blobs, DIGEST, public_keys=[key_signer.public_key], now=NOW
    )
    assert verified.digest == DIGEST
    assert verified.public_key == key_signer.public_key
    assert (verified.chain, verified.identity, verified.issuer) == ((), None, None)
    assert verified.source == artifact.digest


def test_a_keyless_signature_verifies_to_the_root_with_identity_and_issuer(
    authority: SigningAuthority,
) -> None:
    artifact = keyless_artifact(authority)
    _, annotations = layer_of(artifact)
    verified = verify_signature_manifest(
        artifact.manifest,
        artifact.blobs,
        DIGEST,
        trusted_roots=[authority.root_certificate],
        now=NOW,
    )
    assert (verified.identity, verified.issuer) == (IDENTITY, ISSUER)
    assert verified.chain[-1] == authority.root_certificate
    assert verified.chain[0] == x509.load_pem_x509_certificate(
        annotations[CERTIFICATE_ANNOTATION].encode()
    )
    assert verified.public_key == verified.chain[0].public_key()
    chain = x509.load_pem_x509_certificates(annotations[CHAIN_ANNOTATION].encode())
    assert tuple(chain) == authority.chain


def test_flipping_any_byte_of_the_payload_fails(key_signer: KeySigner) -> None:
    """Whether it breaks the JSON, the digest, the type or only the signature, it is refused."""
    payload, annotations = layer_of(
        sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    )
    reasons = set()
    for index in range(len(payload)):
        outcome = check(
            *rewrap(flipped(payload, index), annotations), keys=(key_signer.public_key,)
        )
        assert isinstance(outcome, RejectedSignature), index
        reasons.add(outcome.reason)
    assert reasons == {Rejection.UNKNOWN_SIGNER}  # the signature check comes first


def test_a_payload_blob_that_does_not_match_its_descriptor_fails(key_signer: KeySigner) -> None:
    artifact = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    payload, _ = layer_of(artifact)
    blobs = {d: flipped(b, 3) if b == payload else b for d, b in artifact.blobs.items()}
    outcome = check(artifact.manifest, blobs, keys=(key_signer.public_key,))
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.MALFORMED


def test_flipping_any_byte_of_the_signature_fails(key_signer: KeySigner) -> None:
    payload, annotations = layer_of(
        sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    )
    signature = base64.b64decode(annotations[SIGNATURE_ANNOTATION])
    for index in range(len(signature)):
        bad = base64.b64encode(flipped(signature, index)).decode()
        outcome = check(
            *rewrap(payload, {SIGNATURE_ANNOTATION: bad}), keys=(key_signer.public_key,)
        )
        assert isinstance(outcome, RejectedSignature), index
        assert outcome.reason is Rejection.UNKNOWN_SIGNER


def test_flipping_any_byte_of_the_certificate_fails(authority: SigningAuthority) -> None:
    payload, annotations = layer_of(keyless_artifact(authority))
    roots = (authority.root_certificate,)
    der = x509.load_pem_x509_certificate(annotations[CERTIFICATE_ANNOTATION].encode()).public_bytes(
        serialization.Encoding.DER
    )
    intact = {**annotations, CERTIFICATE_ANNOTATION: cert_pem(der)}
    assert isinstance(check(*rewrap(payload, intact), roots=roots), VerifiedSignature)
    for index in range(len(der)):
        tampered = {**annotations, CERTIFICATE_ANNOTATION: cert_pem(flipped(der, index))}
        outcome = check(*rewrap(payload, tampered), roots=roots)
        assert isinstance(outcome, RejectedSignature), index


def test_flipping_any_character_of_the_expected_digest_fails(key_signer: KeySigner) -> None:
    artifact = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    for index in range(len("sha256:"), len(DIGEST)):
        other = DIGEST[:index] + ("0" if DIGEST[index] != "0" else "1") + DIGEST[index + 1 :]
        outcome = check(
            artifact.manifest, artifact.blobs, keys=(key_signer.public_key,), digest=other
        )
        assert isinstance(outcome, RejectedSignature)
        assert outcome.reason is Rejection.OTHER_DIGEST


def test_a_signature_over_another_digest_fails(key_signer: KeySigner) -> None:
    artifact = sign_manifest(OTHER_DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    with pytest.raises(SignatureRejected, match=OTHER_DIGEST) as caught:
        verify_signature_manifest(
            artifact.manifest, artifact.blobs, DIGEST, public_keys=[key_signer.public_key], now=NOW
        )
    assert caught.value.reason is Rejection.OTHER_DIGEST
    assert caught.value.category is Category.INVALID


def test_an_unknown_key_fails(key_signer: KeySigner) -> None:
    artifact = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    for keys in [(stranger,), ()]:
        outcome = check(artifact.manifest, artifact.blobs, keys=keys)
        assert isinstance(outcome, RejectedSignature)
        assert outcome.reason is Rejection.UNKNOWN_SIGNER


def test_an_expired_signing_certificate_fails(authority: SigningAuthority) -> None:
    artifact = keyless_artifact(authority, now=NOW - dt.timedelta(hours=1))
    outcome = check(artifact.manifest, artifact.blobs, roots=(authority.root_certificate,))
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.EXPIRED_CERTIFICATE


def test_a_certificate_from_another_ca_fails(authority: SigningAuthority, tmp_path: Path) -> None:
    other = SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW)
    artifact = keyless_artifact(other)
    for roots in [(authority.root_certificate,), ()]:
        outcome = check(artifact.manifest, artifact.blobs, roots=roots)
        assert isinstance(outcome, RejectedSignature)
        assert outcome.reason is Rejection.UNTRUSTED_CERTIFICATE


def test_an_expired_certificate_from_another_ca_is_untrusted_not_expired(
    authority: SigningAuthority, tmp_path: Path
) -> None:
    other = SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW - dt.timedelta(days=1))
    artifact = keyless_artifact(other, now=NOW - dt.timedelta(hours=1))
    outcome = check(artifact.manifest, artifact.blobs, roots=(authority.root_certificate,))
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.UNTRUSTED_CERTIFICATE


def test_a_certificate_without_its_chain_fails(authority: SigningAuthority) -> None:
    payload, annotations = layer_of(keyless_artifact(authority))
    del annotations[CHAIN_ANNOTATION]
    outcome = check(*rewrap(payload, annotations), roots=(authority.root_certificate,))
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.UNTRUSTED_CERTIFICATE


def test_a_node_ca_server_certificate_cannot_sign_modules(tmp_path: Path) -> None:
    """A certificate chaining to a trusted root but not for code signing is refused."""
    ca = CertificateAuthority.load_or_create(tmp_path, b"pw", now=NOW)
    chain_pem, key_pem = ca.issue_server_certificate(
        ["node.example"], lifetime=dt.timedelta(days=1), now=NOW
    )
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    payload = payload_for(DIGEST, REFERENCE)
    leaf, *rest = x509.load_pem_x509_certificates(chain_pem.encode())
    annotations = {
        SIGNATURE_ANNOTATION: base64.b64encode(
            key.sign(payload, ec.ECDSA(hashes.SHA256()))
        ).decode(),
        CERTIFICATE_ANNOTATION: leaf.public_bytes(serialization.Encoding.PEM).decode(),
        CHAIN_ANNOTATION: "".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in rest
        ),
    }
    outcome = check(*rewrap(payload, annotations), roots=(ca.root_certificate,))
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.UNTRUSTED_CERTIFICATE


@pytest.mark.parametrize(
    "manifest",
    [
        b"not json",
        b"{}",
        b'{"schemaVersion": 2, "layers": []}',
        b'{"layers": [{"digest": 1}]}',
        b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["not-json", "empty", "no-layers", "bad-layer", "deeply-nested"],
)
def test_a_malformed_signature_manifest_is_rejected(manifest: bytes) -> None:
    outcome = check(manifest, {})
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.MALFORMED


def test_a_missing_payload_blob_is_rejected(key_signer: KeySigner) -> None:
    artifact = sign_manifest(DIGEST, REFERENCE, key_signer, now=NOW).tag_artifact()
    outcome = check(artifact.manifest, {}, keys=(key_signer.public_key,))
    assert isinstance(outcome, RejectedSignature)
    assert outcome.reason is Rejection.MALFORMED


def test_a_key_signer_loads_encrypted_pkcs8_pem() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    assert KeySigner.from_pem(pem, b"secret").public_key == key.public_key()
    with pytest.raises(ArtifactInvalid, match="password"):
        KeySigner.from_pem(pem, b"wrong")
    with pytest.raises(ArtifactInvalid, match="password"):
        KeySigner.from_pem(pem)


@pytest.mark.parametrize(
    ("pem", "complaint"),
    [
        (b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END", "cosign"),
        (b"not a key", "PEM"),
        (
            rsa.generate_private_key(65537, 2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "ECDSA",
        ),
        (
            ec.generate_private_key(ec.SECP384R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "P-256",
        ),
    ],
    ids=["cosign-format", "garbage", "rsa", "p384"],
)
def test_a_key_signer_refuses_other_keys(pem: bytes, complaint: str) -> None:
    with pytest.raises(ArtifactInvalid, match=complaint):
        KeySigner.from_pem(pem)


def test_the_modules_import_nothing_of_the_server_stack() -> None:
    """The agent verifies with these modules, so they load without fastapi, sqlalchemy, pydantic."""
    code = (
        "import sys\n"
        "from powernode.artifacts import keyless, signing, trust\n"
        "loaded = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted({'fastapi', 'sqlalchemy', 'pydantic'} & loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
