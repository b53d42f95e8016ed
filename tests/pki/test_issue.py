"""Issuing node client certificates and node API server certificates from the intermediate."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from powernode.errors import Category
from powernode.pki import CertificateAuthority, PkiError, PkiInvalid, PkiUnavailable
from tests.pki.factories import PASSPHRASE, make_csr, new_key, openssl, tampered_csr, write

DAY = dt.timedelta(days=1)


def _load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _refusal(ca: CertificateAuthority, csr_pem: bytes, now: dt.datetime) -> str:
    with pytest.raises(PkiError) as caught:
        ca.issue_node_certificate(csr_pem, "node-1", lifetime=DAY, now=now)
    assert caught.value.category is Category.INVALID
    return caught.value.detail


def test_node_certificate_names_the_node_and_is_for_client_auth_only(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    key = new_key()
    issued = ca.issue_node_certificate(
        make_csr(key), "0190f3c1-aaaa", lifetime=dt.timedelta(days=30), now=now
    )
    cert = _load(issued.pem)
    assert cert.subject.rfc4514_string() == "CN=0190f3c1-aaaa"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("powernode://node/0190f3c1-aaaa")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert not usage.value.key_agreement
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not constraints.ca
    assert cert.public_key() == key.public_key()


def test_node_certificate_is_backdated_five_minutes_and_lives_as_long_as_asked(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    issued = ca.issue_node_certificate(
        make_csr(), "node-1", lifetime=dt.timedelta(days=30), now=now
    )
    cert = _load(issued.pem)
    assert issued.not_before == cert.not_valid_before_utc == now - dt.timedelta(minutes=5)
    assert issued.not_after == cert.not_valid_after_utc == now + dt.timedelta(days=30)


def test_node_certificate_records_serial_and_fingerprint(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    issued = [
        ca.issue_node_certificate(make_csr(), "node-1", lifetime=DAY, now=now) for _ in range(20)
    ]
    for one in issued:
        cert = _load(one.pem)
        assert one.serial == cert.serial_number
        assert one.serial.bit_length() == 159
        assert one.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
        assert len(one.fingerprint_sha256) == 64
    assert len({one.serial for one in issued}) == 20


def test_node_certificate_is_signed_by_the_intermediate_with_key_identifiers(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    cert = _load(ca.issue_node_certificate(make_csr(), "node-1", lifetime=DAY, now=now).pem)
    cert.verify_directly_issued_by(ca.intermediate_certificate)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    intermediate_ski = ca.intermediate_certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    assert aki.key_identifier == intermediate_ski.digest
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())


def test_openssl_verifies_a_node_certificate_up_to_the_root(
    ca: CertificateAuthority, now: dt.datetime, tmp_path: Path
) -> None:
    issued = ca.issue_node_certificate(make_csr(), "node-1", lifetime=DAY, now=now)
    root = write(tmp_path / "root.pem", ca.root_pem)
    chain = write(tmp_path / "chain.pem", ca.chain_pem)
    leaf = write(tmp_path / "leaf.pem", issued.pem)
    result = openssl("verify", "-CAfile", root, "-untrusted", chain, leaf)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{leaf}: OK"
    strict = openssl(
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        root,
        "-untrusted",
        chain,
        leaf,
    )
    assert strict.returncode == 0, strict.stderr
    as_server = openssl(
        "verify", "-purpose", "sslserver", "-CAfile", root, "-untrusted", chain, leaf
    )
    assert as_server.returncode != 0


def test_openssl_refuses_a_node_certificate_without_the_chain(
    ca: CertificateAuthority, now: dt.datetime, tmp_path: Path
) -> None:
    issued = ca.issue_node_certificate(make_csr(), "node-1", lifetime=DAY, now=now)
    root = write(tmp_path / "root.pem", ca.root_pem)
    leaf = write(tmp_path / "leaf.pem", issued.pem)
    result = openssl("verify", "-CAfile", root, leaf)
    assert result.returncode != 0
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_the_csr_subject_and_requested_extensions_are_ignored(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    csr = make_csr(common_name="admin", dns_names=("evil.example",), ca=True)
    cert = _load(ca.issue_node_certificate(csr, "node-1", lifetime=DAY, now=now).pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node-1"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_p384_key_is_accepted(ca: CertificateAuthority, now: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = _load(ca.issue_node_certificate(make_csr(key), "node-1", lifetime=DAY, now=now).pem)
    assert cert.public_key() == key.public_key()


def test_a_csr_with_a_forged_signature_is_refused(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    forged = tampered_csr(make_csr(common_name="mallory"), b"mallory", b"alice!!")
    detail = _refusal(ca, forged, now)
    assert detail == (
        "the CSR's signature does not verify with its own key: it was altered or forged"
    )


def test_an_rsa_1024_key_is_refused_naming_the_key_and_what_is_allowed(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refusing it is the point
    detail = _refusal(ca, make_csr(key), now)
    assert detail == "the CSR's key is RSA-1024; node keys must be ECDSA P-256 or ECDSA P-384"


def test_other_key_types_are_refused(ca: CertificateAuthority, now: dt.datetime) -> None:
    assert "key is RSA-2048;" in _refusal(
        ca, make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048)), now
    )
    assert "key is ECDSA P-521;" in _refusal(
        ca, make_csr(ec.generate_private_key(ec.SECP521R1())), now
    )
    assert "key is Ed25519PublicKey;" in _refusal(
        ca, make_csr(ed25519.Ed25519PrivateKey.generate()), now
    )


def test_garbage_is_refused_as_not_pem(ca: CertificateAuthority, now: dt.datetime) -> None:
    detail = _refusal(ca, b"\x00\xffnot a csr at all", now)
    assert detail == "the CSR is not PEM: expected a '-----BEGIN CERTIFICATE REQUEST-----' block"


def test_a_certificate_is_not_a_csr(ca: CertificateAuthority, now: dt.datetime) -> None:
    assert "not PEM: expected a '-----BEGIN CERTIFICATE REQUEST-----'" in _refusal(
        ca, ca.root_pem.encode(), now
    )


def test_a_pem_block_with_a_broken_body_is_refused_as_unparseable(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    broken = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    assert _refusal(ca, broken, now).startswith("the CSR could not be parsed: ")


def test_an_oversized_csr_is_refused(ca: CertificateAuthority, now: dt.datetime) -> None:
    assert "at most 16384 are accepted" in _refusal(ca, make_csr() + b" " * 20_000, now)


def test_a_node_id_that_cannot_name_a_certificate_is_refused(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    for bad in ("", "a/b", "x" * 65, "-leading-dash", "node 1"):
        with pytest.raises(PkiInvalid, match="invalid node id"):
            ca.issue_node_certificate(make_csr(), bad, lifetime=DAY, now=now)


def test_a_lifetime_must_be_positive(ca: CertificateAuthority, now: dt.datetime) -> None:
    with pytest.raises(PkiInvalid, match="lifetime must be positive"):
        ca.issue_node_certificate(make_csr(), "node-1", lifetime=dt.timedelta(0), now=now)


def test_a_lifetime_beyond_the_intermediate_ends_with_the_intermediate(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    issued = ca.issue_node_certificate(
        make_csr(), "node-1", lifetime=dt.timedelta(days=20 * 365), now=now
    )
    assert issued.not_after == ca.intermediate_certificate.not_valid_after_utc


def test_nothing_is_issued_once_the_intermediate_has_expired(tmp_path: Path) -> None:
    created = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    ca = CertificateAuthority.load_or_create(tmp_path / "old", PASSPHRASE, now=created)
    with pytest.raises(PkiUnavailable, match="intermediate CA expired at 2024-12-31"):
        ca.issue_node_certificate(
            make_csr(), "node-1", lifetime=DAY, now=created + dt.timedelta(days=6 * 365)
        )


def test_server_certificate_covers_ip_addresses_and_dns_names_for_server_auth(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    hosts = ["127.0.0.1", "::1", "Node-API.example.com.", "localhost", "127.0.0.1"]
    chain_pem, key_pem = ca.issue_server_certificate(hosts, lifetime=DAY * 90, now=now)
    leaf, intermediate = x509.load_pem_x509_certificates(chain_pem.encode())
    assert intermediate == ca.intermediate_certificate
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["node-api.example.com", "localhost"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert leaf.not_valid_after_utc == now + DAY * 90
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert key.public_key() == leaf.public_key()


def test_openssl_verifies_a_server_certificate_for_its_ip_address(
    ca: CertificateAuthority, now: dt.datetime, tmp_path: Path
) -> None:
    chain_pem, _ = ca.issue_server_certificate(["10.0.0.2"], lifetime=DAY, now=now)
    root = write(tmp_path / "root.pem", ca.root_pem)
    served = write(tmp_path / "served.pem", chain_pem)
    args = ("-x509_strict", "-purpose", "sslserver", "-CAfile", root, "-untrusted", served)
    ok = openssl("verify", *args, "-verify_ip", "10.0.0.2", served)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong_ip = openssl("verify", *args, "-verify_ip", "10.0.0.3", served)
    assert wrong_ip.returncode != 0


def test_server_certificate_hosts_must_be_ips_or_dns_names(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    with pytest.raises(PkiInvalid, match="at least one host"):
        ca.issue_server_certificate([], lifetime=DAY, now=now)
    for bad in ("bad host", "", "-x.example", "a..b", "*.example.com", "ex\u00e4mple.com"):
        with pytest.raises(PkiInvalid, match="invalid host"):
            ca.issue_server_certificate([bad], lifetime=DAY, now=now)
