"""Keys, CSRs (cryptography) and the stdlib certificate validity reader."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from powernode.agent import certs
from powernode.agent.pki import KeyAndCsr, key_and_csr, key_and_csr_in_child
from tests.agent.ca import TestPki, pem

NODE_ID = "0190f3c1-7c2d-7000-8000-000000000001"


def _check(made: KeyAndCsr) -> None:
    csr = x509.load_pem_x509_csr(made.csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NODE_ID
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"powernode://node/{NODE_ID}"
    ]
    key = serialization.load_pem_private_key(made.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert made.key_pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert csr.public_key() == key.public_key()


def test_csr_names_the_node_and_matches_a_p256_key() -> None:
    """The CSR has CN = node id and URI SAN powernode://node/<id>, signed by a new P-256 key."""
    _check(key_and_csr(NODE_ID))


async def test_the_child_process_makes_the_same_kind_of_key_and_csr() -> None:
    """The agent's out-of-process key generation yields a valid key and CSR."""
    _check(await key_and_csr_in_child(NODE_ID))


def test_every_call_makes_a_new_key() -> None:
    """Two enrollments never share a key."""
    assert key_and_csr(NODE_ID).key_pem != key_and_csr(NODE_ID).key_pem


@pytest.mark.parametrize(
    "not_before",
    [
        dt.datetime(2024, 5, 1, 12, 30, 15, tzinfo=dt.UTC),  # UTCTime
        dt.datetime(2051, 1, 2, 3, 4, 5, tzinfo=dt.UTC),  # GeneralizedTime (2050 and later)
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),  # UTCTime, 19YY
    ],
)
def test_validity_matches_cryptography(test_pki: TestPki, not_before: dt.datetime) -> None:
    """The stdlib DER reader finds the same validity as cryptography does."""
    cert = test_pki.sign_csr(
        key_and_csr(NODE_ID).csr_pem, not_before=not_before, lifetime=dt.timedelta(days=90)
    )
    found = certs.validity(pem(cert) + test_pki.intermediate_pem)
    assert found.not_before == cert.not_valid_before_utc
    assert found.not_after == cert.not_valid_after_utc


def test_validity_of_a_v1_style_root(test_pki: TestPki) -> None:
    """The root's validity reads too (a different issuer and extension set)."""
    found = certs.validity(test_pki.root_pem)
    assert found.not_after == test_pki.root.not_valid_after_utc


def test_garbage_is_refused() -> None:
    """Text without a certificate, or a broken one, raises ValueError."""
    with pytest.raises(ValueError, match="no PEM certificate"):
        certs.validity("hello")
    with pytest.raises(ValueError, match=r"truncated DER|bad DER length"):
        certs.validity("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")


def test_renewal_falls_at_two_thirds_give_or_take_ten_percent() -> None:
    """renew_at lies between 60% and 73.3% of the lifetime, and spreads over that range."""
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    validity = certs.Validity(start, start + dt.timedelta(days=30))
    rng = random.SystemRandom()
    fractions = [(validity.renew_at(rng) - start) / dt.timedelta(days=30) for _ in range(1000)]
    assert all(0.6 - 1e-9 <= f <= 2 / 3 * 1.1 + 1e-9 for f in fractions)
    assert min(fractions) < 0.61
    assert max(fractions) > 0.72
    assert validity.expired(start + dt.timedelta(days=30))
    assert not validity.expired(start)
