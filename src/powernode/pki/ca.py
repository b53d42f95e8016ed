"""The control plane's certificate authority: a root and an online intermediate, both ECDSA P-256.

The root (10 years, path length 1) signs only the intermediate. The intermediate (5 years, path
length 0) signs node client certificates, the node API's server certificates and the CRL. Nodes
trust the root (from their seed) and receive the intermediate as their chain.

`CertificateAuthority.load_or_create` loads the CA kept under a directory or creates it there (see
`powernode.pki.store` for the layout and why creation is atomic). Private keys are PKCS#8,
encrypted with the passphrase, on disk; in memory the object keeps only the intermediate's key.

Contract for callers: every `now` is timezone-aware and comes from the caller's `Clock`; an
instance never changes after loading, so it may be shared between threads. Issued certificates
are backdated by `CLOCK_SKEW` for nodes whose clocks run slow, and end no later than the
intermediate does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from powernode.pki import store
from powernode.pki.csr import check_csr
from powernode.pki.errors import PkiInvalid, PkiUnavailable
from powernode.pki.identity import check_node_id, node_uri

ROOT_LIFETIME = dt.timedelta(days=3653)  # 10 years
INTERMEDIATE_LIFETIME = dt.timedelta(days=1826)  # 5 years
CLOCK_SKEW = dt.timedelta(minutes=5)
SERVER_SUBJECT = "powernode node API"

_CURVE = ec.SECP256R1
_HASH = hashes.SHA256
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate just issued, with the facts a caller records about it."""

    pem: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    """Lowercase hex SHA-256 of the DER certificate."""


class CertificateAuthority:
    """A loaded CA; build one with `load_or_create`."""

    def __init__(
        self,
        root: x509.Certificate,
        intermediate: x509.Certificate,
        intermediate_key: ec.EllipticCurvePrivateKey,
    ) -> None:
        self._root = root
        self._intermediate = intermediate
        self._key = intermediate_key

    @classmethod
    def load_or_create(
        cls, directory: Path, passphrase: bytes, *, now: dt.datetime
    ) -> CertificateAuthority:
        """Load the CA under `directory`, creating it first (valid from `now`) if there is none.

        Raises `PkiInvalid` for an empty or wrong passphrase and for damaged files.
        """
        now = _utc(now)
        if not passphrase:
            raise PkiInvalid("the CA passphrase is empty; set one to encrypt the CA's keys")
        files = store.read_ca_files(directory)
        if files is None:
            store.write_ca_files(directory, _new_ca_files(passphrase, now))
            files = store.read_ca_files(directory)  # ours, or a concurrent creator's
            assert files is not None
        return cls._from_files(store.ca_path(directory), files, passphrase)

    @classmethod
    def _from_files(
        cls, ca_dir: Path, files: store.CaFiles, passphrase: bytes
    ) -> CertificateAuthority:
        root = _load_cert(ca_dir / store.ROOT_CERT, files.root_cert)
        intermediate = _load_cert(ca_dir / store.INTERMEDIATE_CERT, files.intermediate_cert)
        root_key = _load_key(ca_dir / store.ROOT_KEY, files.root_key, passphrase)
        key = _load_key(ca_dir / store.INTERMEDIATE_KEY, files.intermediate_key, passphrase)
        _check_pair(ca_dir / store.ROOT_KEY, root_key, root)
        _check_pair(ca_dir / store.INTERMEDIATE_KEY, key, intermediate)
        try:
            intermediate.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PkiInvalid(f"the intermediate in {ca_dir} is not signed by the root") from exc
        return cls(root, intermediate, key)

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root

    @property
    def intermediate_certificate(self) -> x509.Certificate:
        return self._intermediate

    @property
    def root_pem(self) -> str:
        """The root certificate: the trust anchor a node's seed carries as `ca`."""
        return _pem(self._root)

    @property
    def intermediate_pem(self) -> str:
        return _pem(self._intermediate)

    @property
    def chain_pem(self) -> str:
        """The certificates between a leaf and the root (today the intermediate alone)."""
        return _pem(self._intermediate)

    def issue_node_certificate(
        self, csr_pem: bytes, node_id: str, *, lifetime: dt.timedelta, now: dt.datetime
    ) -> IssuedCertificate:
        """A client certificate for `node_id` on the CSR's key; the CSR's subject is ignored.

        Raises `PkiInvalid` for a bad CSR or node id, `PkiUnavailable` if the intermediate expired.
        """
        csr = check_csr(csr_pem)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, check_node_id(node_id))])
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(node_uri(node_id))])
        cert = self._sign(
            subject, csr.public_key(), san, ExtendedKeyUsageOID.CLIENT_AUTH, lifetime, _utc(now)
        )
        return IssuedCertificate(
            pem=_pem(cert),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        )

    def issue_server_certificate(
        self, hosts: list[str], *, lifetime: dt.timedelta, now: dt.datetime
    ) -> tuple[str, str]:
        """A server certificate and new key for the node API listener on `hosts`.

        Returns (certificate chain PEM: the leaf then `chain_pem`, ready for
        `SSLContext.load_cert_chain`; unencrypted PKCS#8 key PEM). Raises `PkiInvalid` for a bad
        host name.
        """
        key = ec.generate_private_key(_CURVE())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_SUBJECT)])
        san = x509.SubjectAlternativeName(_host_names(hosts))
        cert = self._sign(
            subject, key.public_key(), san, ExtendedKeyUsageOID.SERVER_AUTH, lifetime, _utc(now)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return _pem(cert) + self.chain_pem, key_pem.decode()

    def build_crl(
        self,
        revoked: Iterable[tuple[int, dt.datetime]],
        *,
        now: dt.datetime,
        next_update: dt.timedelta,
    ) -> bytes:
        """A DER CRL of the (serial, revoked at) pairs, signed by the intermediate.

        Its CRL number is `now` in Unix seconds, so later lists have larger numbers.
        """
        now = _utc(now)
        if next_update <= dt.timedelta(0):
            raise PkiInvalid(f"the CRL's next update must be in the future, got {next_update}")
        earliest: dict[int, dt.datetime] = {}
        for serial, revoked_at in revoked:
            revoked_at = _utc(revoked_at)
            earliest[serial] = min(revoked_at, earliest.get(serial, revoked_at))
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._intermediate.subject)
            .last_update(now)
            .next_update(now + next_update)
            .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        for serial in sorted(earliest):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(earliest[serial])
                .build()
            )
        crl = builder.sign(self._key, _HASH())
        return crl.public_bytes(serialization.Encoding.DER)

    def _sign(
        self,
        subject: x509.Name,
        public_key: CertificatePublicKeyTypes,
        san: x509.SubjectAlternativeName,
        usage: x509.ObjectIdentifier,
        lifetime: dt.timedelta,
        now: dt.datetime,
    ) -> x509.Certificate:
        if lifetime <= dt.timedelta(0):
            raise PkiInvalid(f"a certificate's lifetime must be positive, got {lifetime}")
        not_after = min(now + lifetime, self._intermediate.not_valid_after_utc)
        if not_after <= now:
            raise PkiUnavailable(
                f"the intermediate CA expired at {self._intermediate.not_valid_after_utc:%Y-%m-%d};"
                " no certificate can be issued until the CA is renewed"
            )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._intermediate.subject)
            .public_key(public_key)
            .serial_number(_serial())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(san, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self._authority_key_identifier(), critical=False)
        )
        return builder.sign(self._key, _HASH())

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self._intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def _new_ca_files(passphrase: bytes, now: dt.datetime) -> store.CaFiles:
    """A fresh root and intermediate, serialised with their keys encrypted."""
    suffix = secrets.token_hex(4)  # tells CAs of different installations apart by name
    root_key = ec.generate_private_key(_CURVE())
    root_name = _ca_name(f"powernode root CA {suffix}")
    root = _ca_certificate(
        root_name, root_key.public_key(), root_name, root_key, 1, now, ROOT_LIFETIME
    )
    key = ec.generate_private_key(_CURVE())
    intermediate = _ca_certificate(
        _ca_name(f"powernode intermediate CA {suffix}"),
        key.public_key(),
        root_name,
        root_key,
        0,
        now,
        INTERMEDIATE_LIFETIME,
    )
    return store.encrypted_files(root, root_key, intermediate, key, passphrase)


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "powernode"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
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
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(issuer_key, _HASH())


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


def _host_names(hosts: list[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise PkiInvalid("a server certificate needs at least one host name or IP address")
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # drop duplicates, keep order
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.removesuffix(".").split(".")
        if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise PkiInvalid(
                f"invalid host {host!r}: expected an IP address or a DNS name of labels "
                "[A-Za-z0-9-] joined by '.'"
            )
        names.append(x509.DNSName(host.removesuffix(".").lower()))
    return names


def _serial() -> int:
    """A random positive serial of exactly 159 bits (158 random): 20 DER bytes, never zero."""
    return secrets.randbits(158) | 1 << 158


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError(f"expected a timezone-aware datetime, got naive {moment}")
    return moment.astimezone(dt.UTC)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _load_cert(path: Path, pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiInvalid(f"{path} is not a PEM certificate: {exc}") from exc


def _load_key(path: Path, pem: bytes, passphrase: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:  # the file holds an unencrypted key
        raise PkiInvalid(f"{path} is not encrypted; CA keys must be") from exc
    except ValueError as exc:
        raise PkiInvalid(
            f"wrong CA passphrase: it does not decrypt {path} (or the file is damaged)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiInvalid(f"{path} holds a {type(key).__name__}, not an ECDSA key")
    return key


def _check_pair(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    if key.public_key() != cert.public_key():
        raise PkiInvalid(f"{path} does not belong to the certificate next to it")
