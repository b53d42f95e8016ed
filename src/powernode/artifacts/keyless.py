"""Keyless-style signing: short-lived certificates binding a fresh key to an identity.

`SigningAuthority` plays Fulcio's part: a root and an intermediate (ECDSA P-256, the intermediate
limited to code signing) that issue 10-minute leaf certificates naming an identity (email or URI
subject alternative name) and its OIDC issuer (Fulcio's extensions 1.3.6.1.4.1.57264.1.1, the
raw UTF-8 bytes, and .1.8, a DER UTF8String; see Fulcio's `docs/oid-info.md`). Leaves are
backdated by `CLOCK_SKEW` like every certificate powernode issues. The authority trusts the
identity it is given: the caller has authenticated it. There is no certificate transparency log.

`KeylessSigner` makes a fresh key for each signature, has it certified, signs, and drops the
key. The verifying side is `powernode.artifacts.trust.check_certificate`.

Files: the CA is kept like the node CA (see `powernode.pki.store`: `<directory>/ca/`, keys
PKCS#8 encrypted with the passphrase, 0600, created atomically), but in its own directory; a
directory holding the node CA is refused. A loaded authority never changes, so it may be shared
between threads. Every `now` is timezone-aware and comes from the caller's clock.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from powernode.artifacts.signing import ArtifactError, ArtifactInvalid, PayloadSignature
from powernode.artifacts.trust import FULCIO_ISSUER_V1, FULCIO_ISSUER_V2
from powernode.errors import Unavailable
from powernode.pki import store
from powernode.pki.ca import CLOCK_SKEW, INTERMEDIATE_LIFETIME, ROOT_LIFETIME

SIGNING_CERTIFICATE_LIFETIME = dt.timedelta(minutes=10)
ROOT_NAME_PREFIX = "powernode signing root CA"

_EMAIL = re.compile(r"[^@\s:/]+@[^@\s:/]+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING


class SigningUnavailable(ArtifactError, Unavailable):
    title = "Signing authority unavailable"


class SigningAuthority:
    """A loaded signing CA; build one with `load_or_create`."""

    def __init__(
        self,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self._root = root
        self._intermediate = intermediate
        self._key = key

    @classmethod
    def load_or_create(
        cls, directory: Path, passphrase: bytes, *, now: dt.datetime
    ) -> SigningAuthority:
        """Load the authority under `directory`, creating it first (valid from `now`) if none.

        Raises `Invalid` for an empty or wrong passphrase, damaged files, or the node CA.
        """
        if not passphrase:
            raise ArtifactInvalid("the signing CA passphrase is empty; set one to encrypt its keys")
        files = store.read_ca_files(directory)
        if files is None:
            store.write_ca_files(directory, _new_files(passphrase, _utc(now)))
            files = store.read_ca_files(directory)  # ours, or a concurrent creator's
            assert files is not None
        where = store.ca_path(directory)
        try:
            root = x509.load_pem_x509_certificate(files.root_cert)
            intermediate = x509.load_pem_x509_certificate(files.intermediate_cert)
        except ValueError as exc:
            raise ArtifactInvalid(f"a certificate in {where} is unreadable: {exc}") from None
        names = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names or not str(names[0].value).startswith(ROOT_NAME_PREFIX):
            raise ArtifactInvalid(f"{where} holds another CA (the node CA?), not a signing CA")
        root_key = _load_key(files.root_key, passphrase, where)
        key = _load_key(files.intermediate_key, passphrase, where)
        try:
            intermediate.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            raise ArtifactInvalid(
                f"the intermediate in {where} is not signed by its root"
            ) from None
        if (
            root_key.public_key() != root.public_key()
            or key.public_key() != intermediate.public_key()
        ):
            raise ArtifactInvalid(f"the keys in {where} do not belong to its certificates")
        return cls(root, intermediate, key)

    @property
    def root_certificate(self) -> x509.Certificate:
        """The trust anchor verifiers of keyless signatures are given."""
        return self._root

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """What a leaf is sent with, as Fulcio sends it: the intermediate, then the root."""
        return (self._intermediate, self._root)

    def issue_signing_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        identity: str,
        issuer: str,
        *,
        now: dt.datetime,
        lifetime: dt.timedelta = SIGNING_CERTIFICATE_LIFETIME,
    ) -> x509.Certificate:
        """A code signing certificate naming `identity` and `issuer` for `public_key`."""
        now = _utc(now)
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise ArtifactInvalid(f"the key is on {public_key.curve.name}; expected P-256")
        if lifetime <= dt.timedelta(0):
            raise ArtifactInvalid(f"a certificate's lifetime must be positive, got {lifetime}")
        not_after = min(now + lifetime, self._intermediate.not_valid_after_utc)
        if not_after <= now or now < self._intermediate.not_valid_before_utc:
            raise SigningUnavailable(f"the signing intermediate CA is not valid at {now}")
        ski = self._intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))  # as Fulcio: the identity is in the SAN alone
            .issuer_name(self._intermediate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([_CODE_SIGNING]), critical=False)
            .add_extension(x509.SubjectAlternativeName([_identity_name(identity)]), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
                critical=False,
            )
        )
        for oid, value in _issuer_extensions(issuer):
            builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
        return builder.sign(self._key, hashes.SHA256())


class KeylessSigner:
    """Signs each payload with a fresh key, certified for `identity` from `issuer` for 10 minutes.

    The key lives only for one `sign` call; the signature carries the certificate and chain.
    """

    def __init__(self, authority: SigningAuthority, identity: str, issuer: str) -> None:
        _identity_name(identity)
        _issuer_extensions(issuer)
        self._authority = authority
        self._identity = identity
        self._issuer = issuer

    def sign(self, payload: bytes, *, now: dt.datetime) -> PayloadSignature:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._authority.issue_signing_certificate(
            key.public_key(), self._identity, self._issuer, now=now
        )
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
        return PayloadSignature(signature, cert, self._authority.chain)


def _identity_name(identity: str) -> x509.GeneralName:
    try:
        if _EMAIL.fullmatch(identity):
            return x509.RFC822Name(identity)
        if _URI.fullmatch(identity):
            return x509.UniformResourceIdentifier(identity)
    except ValueError:  # not ASCII
        pass
    raise ArtifactInvalid(f"identity {identity!r} is neither an email address nor a URI")


def _issuer_extensions(issuer: str) -> list[tuple[x509.ObjectIdentifier, bytes]]:
    if not _URI.fullmatch(issuer):
        raise ArtifactInvalid(f"issuer {issuer!r} is not a URL")
    return [(FULCIO_ISSUER_V1, issuer.encode()), (FULCIO_ISSUER_V2, _to_utf8string(issuer))]


def _to_utf8string(text: str) -> bytes:
    """`text` as a DER UTF8String (tag 0x0c)."""
    raw = text.encode()
    if len(raw) < 0x80:
        return bytes([0x0C, len(raw)]) + raw
    size = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x0C, 0x80 | len(size)]) + size + raw


def _new_files(passphrase: bytes, now: dt.datetime) -> store.CaFiles:
    suffix = secrets.token_hex(4)  # tells the authorities of different installations apart
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{ROOT_NAME_PREFIX} {suffix}")
    root = _ca_certificate(root_name, root_key, root_name, root_key, 1, now, ROOT_LIFETIME)
    intermediate = _ca_certificate(
        _name(f"powernode signing intermediate CA {suffix}"),
        key,
        root_name,
        root_key,
        0,
        now,
        INTERMEDIATE_LIFETIME,
    )
    return store.encrypted_files(root, root_key, intermediate, key, passphrase)


def _ca_certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    path_length: int,
    now: dt.datetime,
    lifetime: dt.timedelta,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if path_length == 0:  # the intermediate: it certifies code signing keys and nothing else
        builder = builder.add_extension(x509.ExtendedKeyUsage([_CODE_SIGNING]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(f"CN={common_name},O=powernode")


def _load_key(pem: bytes, passphrase: bytes, where: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError:
        raise ArtifactInvalid(
            f"a key in {where} is not encrypted; signing CA keys must be"
        ) from None
    except ValueError:
        raise ArtifactInvalid(f"wrong passphrase for the signing CA in {where}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ArtifactInvalid(f"a key in {where} is a {type(key).__name__}, not ECDSA")
    return key


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(dt.UTC)
