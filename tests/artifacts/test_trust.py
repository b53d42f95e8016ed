"""Per-module trust policies: which verified signatures satisfy them, and why others do not."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from powernode.artifacts.keyless import KeylessSigner, SigningAuthority
from powernode.artifacts.signing import (
    ArtifactInvalid,
    KeySigner,
    RejectedSignature,
    Rejection,
    SignatureArtifact,
    Signer,
    VerifiedSignature,
    sign_manifest,
)
from powernode.artifacts.trust import (
    Decision,
    TrustPolicy,
    UntrustedArtifact,
    evaluate,
    public_key_pem,
    verify_module,
)
from powernode.errors import Category, Invalid

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DIGEST = "sha256:" + hashlib.sha256(b"module manifest").hexdigest()
REFERENCE = "registry.example.com/modules/nginx"
ISSUER = "https://idp.example.com"
COMPANY = (r".*@example\.com", r"https://idp\.example\.com")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SigningAuthority:
    created = NOW - dt.timedelta(days=1)
    return SigningAuthority.load_or_create(tmp_path_factory.mktemp("signing"), b"pw", now=created)


@pytest.fixture
def key_signer() -> KeySigner:
    return KeySigner(ec.generate_private_key(ec.SECP256R1()))


def signed(
    signer: Signer, *, digest: str = DIGEST, now: dt.datetime = NOW
) -> tuple[bytes, dict[str, bytes]]:
    artifact: SignatureArtifact = sign_manifest(digest, REFERENCE, signer, now=now).tag_artifact()
    return artifact.manifest, dict(artifact.blobs)


def decide(
    policy: TrustPolicy, authority: SigningAuthority, *manifests: tuple[bytes, dict[str, bytes]]
) -> Decision:
    return verify_module(
        policy, DIGEST, manifests, trusted_roots=[authority.root_certificate], now=NOW
    )


def verified(identity: str | None, issuer: str | None = ISSUER) -> VerifiedSignature:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return VerifiedSignature(DIGEST, key, (), identity, issuer, "sha256:" + "0" * 64)


def test_a_certificate_signature_from_a_trusted_identity_and_issuer_is_allowed(
    authority: SigningAuthority,
) -> None:
    policy = TrustPolicy([COMPANY])
    decision = decide(
        policy, authority, signed(KeylessSigner(authority, "bob@example.com", ISSUER))
    )
    assert decision == Decision(True, [], "bob@example.com from https://idp.example.com")
    decision.require("module nginx")


@pytest.mark.parametrize(
    ("identity", "issuer", "reason"),
    [
        ("evil@example.com.attacker", ISSUER, "identity mismatch"),
        ("bob@example.com", "https://idp.example.com.attacker", "issuer mismatch"),
        ("bob@example.com", "https://evil.example/https://idp.example.com", "issuer mismatch"),
        ("bob@example.com\n", ISSUER, "identity mismatch"),
    ],
)
def test_identity_and_issuer_patterns_must_match_the_whole_string(
    identity: str, issuer: str, reason: str
) -> None:
    decision = evaluate(TrustPolicy([COMPANY]), [verified(identity, issuer)])
    assert not decision.allowed
    (text,) = decision.reasons
    assert reason in text


def test_identity_and_issuer_must_match_the_same_pair() -> None:
    """Alice trusted from one issuer and Bob from another does not trust Bob from Alice's."""
    policy = TrustPolicy(
        [("alice@example.com", "https://a.example"), ("bob@example.com", "https://b.example")]
    )
    assert evaluate(policy, [verified("bob@example.com", "https://b.example")]).allowed
    decision = evaluate(policy, [verified("bob@example.com", "https://a.example")])
    assert not decision.allowed
    assert "issuer mismatch" in decision.reasons[0]


def test_a_certificate_without_an_issuer_matches_no_issuer_pattern() -> None:
    decision = evaluate(TrustPolicy([COMPANY]), [verified("bob@example.com", None)])
    assert not decision.allowed
    assert "issuer mismatch" in decision.reasons[0]


def test_a_signature_with_a_pinned_key_is_allowed(
    key_signer: KeySigner, authority: SigningAuthority
) -> None:
    policy = TrustPolicy(public_keys=[public_key_pem(key_signer.public_key)])
    decision = decide(policy, authority, signed(key_signer))
    assert decision.allowed
    assert decision.signer is not None
    assert decision.signer.startswith("key sha256:")


def test_a_key_signature_needs_a_pinned_key(key_signer: KeySigner) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    policy = TrustPolicy([COMPANY], [public_key_pem(other)])
    decision = evaluate(policy, [verified(None)])
    assert not decision.allowed
    assert "unknown signer" in decision.reasons[0]


def test_a_certificate_signature_does_not_satisfy_a_key_only_policy(
    key_signer: KeySigner,
) -> None:
    policy = TrustPolicy(public_keys=[public_key_pem(key_signer.public_key)])
    decision = evaluate(policy, [verified("bob@example.com")])
    assert not decision.allowed
    assert "unknown signer" in decision.reasons[0]


def test_each_signature_that_does_not_count_is_explained(
    authority: SigningAuthority, key_signer: KeySigner, tmp_path: Path
) -> None:
    stranger = SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW - dt.timedelta(days=1))
    company = KeylessSigner(authority, "bob@example.com", ISSUER)
    decision = decide(
        TrustPolicy([COMPANY]),
        authority,
        signed(key_signer),
        signed(KeylessSigner(authority, "eve@evil.example", ISSUER)),
        signed(company, now=NOW - dt.timedelta(hours=1)),
        signed(company, digest="sha256:" + "1" * 64),
        signed(KeylessSigner(stranger, "bob@example.com", ISSUER)),
    )
    assert not decision.allowed
    assert [reason.split(": ")[1] for reason in decision.reasons] == [
        "unknown signer",
        "identity mismatch",
        "expired certificate",
        "signature over another digest",
        "unknown signer (certificate from an untrusted CA)",
    ]
    assert [reason.split(" (")[0] for reason in decision.reasons] == [
        f"signature {n}" for n in range(1, 6)
    ]


def test_one_satisfying_signature_is_enough(
    authority: SigningAuthority, key_signer: KeySigner
) -> None:
    decision = decide(
        TrustPolicy([COMPANY]),
        authority,
        signed(key_signer),
        signed(KeylessSigner(authority, "bob@example.com", ISSUER)),
    )
    assert decision.allowed
    assert len(decision.reasons) == 1


def test_no_signatures_is_not_allowed() -> None:
    decision = evaluate(TrustPolicy([COMPANY]), [])
    assert decision == Decision(False, ["there are no signatures"])


def test_a_verified_signature_over_another_digest_does_not_count() -> None:
    other = "sha256:" + "2" * 64
    decision = evaluate(TrustPolicy([COMPANY]), [verified("bob@example.com")], digest=other)
    assert not decision.allowed
    assert "signature over another digest" in decision.reasons[0]


def test_require_raises_forbidden_with_the_reasons() -> None:
    decision = evaluate(
        TrustPolicy([COMPANY]),
        [RejectedSignature(Rejection.EXPIRED_CERTIFICATE, "expired at noon", "sha256:x")],
    )
    with pytest.raises(UntrustedArtifact, match="expired certificate") as caught:
        decision.require("module nginx")
    assert caught.value.category is Category.FORBIDDEN
    assert caught.value.extra["reasons"] == decision.reasons


def test_a_policy_round_trips_through_a_dict(key_signer: KeySigner) -> None:
    policy = TrustPolicy([COMPANY], [public_key_pem(key_signer.public_key)])
    data = policy.to_dict()
    assert data == {
        "identities": [{"identity": COMPANY[0], "issuer": COMPANY[1]}],
        "public_keys": [public_key_pem(key_signer.public_key)],
    }
    assert TrustPolicy.from_dict(data) == policy
    assert TrustPolicy.from_dict(data).keys == (key_signer.public_key,)


def _rsa_pem() -> str:
    key = rsa.generate_private_key(65537, 2048).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_bytes(serialization.Encoding.PEM, spki).decode()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ({"identities": [{"identity": "a(b", "issuer": ".*"}]}, "identity pattern 1 'a\\(b'"),
        ({"identities": [{"identity": ".*", "issuer": "[x"}]}, "issuer pattern 1 '\\[x'"),
        ({"identities": [{"identity": ".*"}]}, "identities"),
        ({"identities": "x"}, "identities"),
        ({"identities": [{"identity": 1, "issuer": ".*"}]}, "identity pattern 1"),
        ({"public_keys": ["not a key"]}, "public key 1"),
        ({"public_keys": [_rsa_pem()]}, "public key 1"),
        ({"public_keys": "x"}, "public_keys"),
        ({"owners": []}, "owners"),
        ({}, "at least one"),
    ],
    ids=[
        "bad-identity",
        "bad-issuer",
        "no-issuer",
        "not-a-list",
        "not-a-string",
        "bad-pem",
        "rsa-key",
        "keys-not-a-list",
        "unknown-field",
        "empty",
    ],
)
def test_a_bad_policy_is_refused_naming_what_is_wrong(data: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ArtifactInvalid, match=complaint) as caught:
        TrustPolicy.from_dict(data)
    assert isinstance(caught.value, Invalid)
