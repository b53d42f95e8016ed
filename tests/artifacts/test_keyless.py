"""The signing authority: its files, the certificates it issues, and the keyless signer."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from powernode.artifacts.keyless import (
    SIGNING_CERTIFICATE_LIFETIME,
    KeylessSigner,
    SigningAuthority,
    SigningUnavailable,
)
from powernode.artifacts.signing import ArtifactInvalid
from powernode.artifacts.trust import (
    FULCIO_ISSUER_V1,
    FULCIO_ISSUER_V2,
    certificate_identity,
    certificate_issuer,
)
from powernode.errors import Category, Invalid
from powernode.pki import CertificateAuthority
from powernode.pki.ca import CLOCK_SKEW

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
ISSUER = "https://idp.example.com"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SigningAuthority:
    return SigningAuthority.load_or_create(tmp_path_factory.mktemp("signing"), b"pw", now=NOW)


def issue(
    authority: SigningAuthority, identity: str = "alice@example.com", issuer: str = ISSUER
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return authority.issue_signing_certificate(key, identity, issuer, now=NOW)


def raw_extension(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bytes:
    value = cert.extensions.get_extension_for_oid(oid).value
    assert isinstance(value, x509.UnrecognizedExtension)
    return value.value


def test_the_authority_keeps_encrypted_keys_0600_and_loads_again(tmp_path: Path) -> None:
    first = SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW)
    ca = tmp_path / "ca"
    for name in ("root-key.pem", "intermediate-key.pem"):
        assert stat.S_IMODE((ca / name).stat().st_mode) == 0o600
        assert (ca / name).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    again = SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW + dt.timedelta(days=1))
    assert again.root_certificate == first.root_certificate
    assert again.chain == first.chain


@pytest.mark.parametrize("passphrase", [b"", b"wrong"])
def test_a_bad_passphrase_is_refused(tmp_path: Path, passphrase: bytes) -> None:
    SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW)
    with pytest.raises(Invalid, match="passphrase"):
        SigningAuthority.load_or_create(tmp_path, passphrase, now=NOW)


def test_the_node_ca_directory_is_refused(tmp_path: Path) -> None:
    """Module signatures and node identities never share a CA."""
    CertificateAuthority.load_or_create(tmp_path, b"pw", now=NOW)
    with pytest.raises(ArtifactInvalid, match="not a signing CA"):
        SigningAuthority.load_or_create(tmp_path, b"pw", now=NOW)


def test_the_intermediate_may_only_certify_code_signing(authority: SigningAuthority) -> None:
    intermediate, root = authority.chain
    assert root == authority.root_certificate
    intermediate.verify_directly_issued_by(root)
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    usage = intermediate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CODE_SIGNING]


def test_a_signing_certificate_is_a_ten_minute_code_signing_leaf(
    authority: SigningAuthority,
) -> None:
    cert = issue(authority)
    cert.verify_directly_issued_by(authority.chain[0])
    assert cert.subject == x509.Name([])
    assert cert.not_valid_after_utc == NOW + SIGNING_CERTIFICATE_LIFETIME
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
    assert dt.timedelta(minutes=10) == SIGNING_CERTIFICATE_LIFETIME
    extensions = cert.extensions
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CODE_SIGNING
    ]
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


@pytest.mark.parametrize(
    ("identity", "kind"),
    [
        ("alice@example.com", x509.RFC822Name),
        ("https://github.com/org/repo/.github/workflows/release.yml@refs/heads/main", None),
        ("spiffe://example.com/ci/builder", None),
    ],
)
def test_the_identity_is_an_email_or_uri_san(
    authority: SigningAuthority, identity: str, kind: type[x509.GeneralName] | None
) -> None:
    cert = issue(authority, identity)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (name,) = list(san)
    assert isinstance(name, kind or x509.UniformResourceIdentifier)
    assert name.value == identity
    assert certificate_identity(cert) == identity


def test_the_issuer_is_in_both_fulcio_extensions(authority: SigningAuthority) -> None:
    """1.1 holds the issuer URL's raw bytes; 1.8 a DER UTF8String (tag 0x0c) of it."""
    cert = issue(authority)
    assert raw_extension(cert, FULCIO_ISSUER_V1) == b"https://idp.example.com"
    assert raw_extension(cert, FULCIO_ISSUER_V2) == b"\x0c\x17https://idp.example.com"
    assert certificate_issuer(cert) == ISSUER


def test_a_long_issuer_gets_a_long_form_der_length(authority: SigningAuthority) -> None:
    issuer = "https://idp.example.com/" + "a" * 200
    cert = issue(authority, issuer=issuer)
    assert raw_extension(cert, FULCIO_ISSUER_V2) == b"\x0c\x81\xe0" + issuer.encode()
    assert certificate_issuer(cert) == issuer


@pytest.mark.parametrize("identity", ["", "alice", "two words@example.com", "ålice@example.com"])
def test_an_identity_that_is_neither_email_nor_uri_is_refused(
    authority: SigningAuthority, identity: str
) -> None:
    with pytest.raises(ArtifactInvalid, match="identity"):
        issue(authority, identity)
    with pytest.raises(ArtifactInvalid, match="identity"):
        KeylessSigner(authority, identity, ISSUER)


@pytest.mark.parametrize("issuer", ["", "idp.example.com", "https://idp example"])
def test_an_issuer_that_is_not_a_url_is_refused(authority: SigningAuthority, issuer: str) -> None:
    with pytest.raises(ArtifactInvalid, match="issuer"):
        KeylessSigner(authority, "alice@example.com", issuer)


def test_a_key_on_another_curve_is_not_certified(authority: SigningAuthority) -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ArtifactInvalid, match="P-256"):
        authority.issue_signing_certificate(key, "alice@example.com", ISSUER, now=NOW)


def test_nothing_is_issued_once_the_intermediate_expired(authority: SigningAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SigningUnavailable) as caught:
        authority.issue_signing_certificate(
            key, "alice@example.com", ISSUER, now=NOW + dt.timedelta(days=6 * 365)
        )
    assert caught.value.category is Category.UNAVAILABLE


def test_the_keyless_signer_certifies_a_fresh_key_for_every_signature(
    authority: SigningAuthority,
) -> None:
    signer = KeylessSigner(authority, "alice@example.com", ISSUER)
    first, second = signer.sign(b"payload", now=NOW), signer.sign(b"payload", now=NOW)
    assert first.certificate is not None
    assert second.certificate is not None
    assert first.certificate.public_key() != second.certificate.public_key()
    for signed in (first, second):
        assert signed.certificate is not None
        key = signed.certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        key.verify(signed.signature, b"payload", ec.ECDSA(hashes.SHA256()))
        assert signed.chain == authority.chain
        assert certificate_identity(signed.certificate) == "alice@example.com"
