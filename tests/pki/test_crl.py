"""The certificate revocation list: what it lists, who signed it, and what openssl makes of it."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.pki import CertificateAuthority, PkiInvalid
from tests.pki.factories import PASSPHRASE, make_csr, openssl, write

HOUR = dt.timedelta(hours=1)


def _public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _revoked_serials(ca: CertificateAuthority, now: dt.datetime, count: int) -> list[int]:
    return [
        ca.issue_node_certificate(make_csr(), f"node-{i}", lifetime=HOUR, now=now).serial
        for i in range(count)
    ]


def test_crl_lists_the_revoked_serials_with_their_dates(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    serials = _revoked_serials(ca, now, 3)
    revoked = [(serial, now - dt.timedelta(minutes=i)) for i, serial in enumerate(serials)]
    crl = x509.load_der_x509_crl(ca.build_crl(revoked, now=now, next_update=HOUR))
    assert {entry.serial_number: entry.revocation_date_utc for entry in crl} == dict(revoked)
    assert crl.last_update_utc == now
    assert crl.next_update_utc == now + HOUR
    assert crl.issuer == ca.intermediate_certificate.subject
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == int(now.timestamp())
    assert crl.is_signature_valid(_public_key(ca.intermediate_certificate))
    assert not crl.is_signature_valid(_public_key(ca.root_certificate))


def test_an_empty_crl_is_still_a_signed_crl(ca: CertificateAuthority, now: dt.datetime) -> None:
    crl = x509.load_der_x509_crl(ca.build_crl([], now=now, next_update=HOUR))
    assert len(crl) == 0
    assert crl.is_signature_valid(_public_key(ca.intermediate_certificate))


def test_a_serial_revoked_twice_is_listed_once_at_its_first_revocation(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    revoked = [(7, now), (7, now - HOUR)]
    crl = x509.load_der_x509_crl(ca.build_crl(revoked, now=now, next_update=HOUR))
    assert [(entry.serial_number, entry.revocation_date_utc) for entry in crl] == [(7, now - HOUR)]


def test_openssl_reads_the_crl_and_verifies_it_against_the_intermediate(
    ca: CertificateAuthority, now: dt.datetime, tmp_path: Path
) -> None:
    serials = _revoked_serials(ca, now, 2)
    der = write(
        tmp_path / "crl.der", ca.build_crl([(s, now) for s in serials], now=now, next_update=HOUR)
    )
    text = openssl("crl", "-inform", "DER", "-in", der, "-text", "-noout")
    assert text.returncode == 0, text.stderr
    for serial in serials:
        assert f"Serial Number: {serial:040X}" in text.stdout
    number = re.search(r"X509v3 CRL Number:\s*(\d+)", text.stdout)
    assert number is not None
    assert int(number[1]) == int(now.timestamp())

    chain = write(tmp_path / "chain.pem", ca.chain_pem)
    verified = openssl("crl", "-inform", "DER", "-in", der, "-CAfile", chain, "-noout")
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stderr


def test_openssl_refuses_the_crl_against_another_ca(
    ca: CertificateAuthority, now: dt.datetime, tmp_path: Path
) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other", PASSPHRASE, now=now)
    der = write(tmp_path / "crl.der", ca.build_crl([], now=now, next_update=HOUR))
    chain = write(tmp_path / "other-chain.pem", other.chain_pem)
    verified = openssl("crl", "-inform", "DER", "-in", der, "-CAfile", chain, "-noout")
    assert verified.returncode != 0
    assert "verify OK" not in verified.stderr


def test_openssl_sees_a_revoked_certificate_as_revoked(
    ca: CertificateAuthority, now: dt.datetime, tmp_path: Path
) -> None:
    revoked = ca.issue_node_certificate(make_csr(), "node-1", lifetime=HOUR, now=now)
    good = ca.issue_node_certificate(make_csr(), "node-2", lifetime=HOUR, now=now)
    crl_der = ca.build_crl([(revoked.serial, now)], now=now, next_update=HOUR)
    crl = x509.load_der_x509_crl(crl_der)
    crl_pem = write(tmp_path / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
    root = write(tmp_path / "root.pem", ca.root_pem)
    chain = write(tmp_path / "chain.pem", ca.chain_pem)
    args = ("verify", "-crl_check", "-CRLfile", crl_pem, "-CAfile", root, "-untrusted", chain)
    refused = openssl(*args, write(tmp_path / "revoked.pem", revoked.pem))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl(*args, write(tmp_path / "good.pem", good.pem))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_next_update_must_be_in_the_future(ca: CertificateAuthority, now: dt.datetime) -> None:
    with pytest.raises(PkiInvalid, match="next update must be in the future"):
        ca.build_crl([], now=now, next_update=dt.timedelta(0))
