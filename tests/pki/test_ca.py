"""Creating, storing and loading the CA: its shape, its files, and its failure modes."""

from __future__ import annotations

import datetime as dt
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.errors import Category, PowernodeError
from powernode.pki import CertificateAuthority, PkiError, PkiInvalid
from powernode.pki.ca import CLOCK_SKEW, INTERMEDIATE_LIFETIME, ROOT_LIFETIME
from tests.pki.factories import PASSPHRASE, make_csr, openssl, write

KEYS = ("root-key.pem", "intermediate-key.pem")
CERTS = ("root.pem", "intermediate.pem")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_root_is_a_self_signed_p256_ca_for_ten_years_with_path_length_1(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    root = ca.root_certificate
    root.verify_directly_issued_by(root)
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    constraints = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 1)
    usage = root.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert (usage.value.key_cert_sign, usage.value.crl_sign) == (True, True)
    assert not usage.value.digital_signature
    assert root.not_valid_before_utc == now - CLOCK_SKEW
    assert root.not_valid_after_utc == now + ROOT_LIFETIME


def test_intermediate_is_signed_by_the_root_for_five_years_with_path_length_0(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    intermediate = ca.intermediate_certificate
    intermediate.verify_directly_issued_by(ca.root_certificate)
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    assert intermediate.not_valid_after_utc == now + INTERMEDIATE_LIFETIME
    assert ca.chain_pem == ca.intermediate_pem
    assert ca.root_pem.startswith("-----BEGIN CERTIFICATE-----")


def test_openssl_accepts_the_ca_certificates_under_strict_checks(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    root = write(tmp_path / "root.pem", ca.root_pem)
    chain = write(tmp_path / "chain.pem", ca.chain_pem)
    result = openssl("verify", "-x509_strict", "-CAfile", root, chain)
    assert result.returncode == 0, result.stderr


def test_files_are_private_keys_0600_certificates_0644_directories_0700(
    ca: CertificateAuthority, ca_dir: Path
) -> None:
    assert _mode(ca_dir) == 0o700
    assert _mode(ca_dir / "ca") == 0o700
    assert sorted(p.name for p in (ca_dir / "ca").iterdir()) == sorted(KEYS + CERTS)
    for name in KEYS:
        assert _mode(ca_dir / "ca" / name) == 0o600
    for name in CERTS:
        assert _mode(ca_dir / "ca" / name) == 0o644
    assert (ca_dir / "ca" / "root.pem").read_text() == ca.root_pem


def test_private_keys_are_encrypted_with_the_passphrase(
    ca: CertificateAuthority, ca_dir: Path
) -> None:
    for name in KEYS:
        data = (ca_dir / "ca" / name).read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError, match="encrypted"):
            serialization.load_pem_private_key(data, password=None)
        with pytest.raises(ValueError, match="password"):
            serialization.load_pem_private_key(data, password=b"not the passphrase")
        assert serialization.load_pem_private_key(data, password=PASSPHRASE)
        assert openssl("pkey", "-in", ca_dir / "ca" / name, "-passin", "pass:").returncode != 0


def test_a_second_call_loads_the_same_ca_and_it_still_signs(
    ca: CertificateAuthority, ca_dir: Path, now: dt.datetime
) -> None:
    later = now + dt.timedelta(days=3)
    again = CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=later)
    assert (again.root_pem, again.intermediate_pem) == (ca.root_pem, ca.intermediate_pem)
    issued = again.issue_node_certificate(
        make_csr(), "node-1", lifetime=dt.timedelta(days=1), now=later
    )
    cert = x509.load_pem_x509_certificate(issued.pem.encode())
    cert.verify_directly_issued_by(ca.intermediate_certificate)


def test_a_wrong_passphrase_is_refused_with_an_invalid_error_naming_the_file(
    ca: CertificateAuthority, ca_dir: Path, now: dt.datetime
) -> None:
    with pytest.raises(PkiError, match="wrong CA passphrase: it does not decrypt") as caught:
        CertificateAuthority.load_or_create(ca_dir, b"guess", now=now)
    assert isinstance(caught.value, PowernodeError)
    assert caught.value.category is Category.INVALID
    assert "root-key.pem" in caught.value.detail


def test_an_empty_passphrase_is_refused_before_anything_is_written(
    ca_dir: Path, now: dt.datetime
) -> None:
    with pytest.raises(PkiInvalid, match="passphrase is empty"):
        CertificateAuthority.load_or_create(ca_dir, b"", now=now)
    assert not ca_dir.exists()


def test_a_ca_with_a_missing_file_is_refused_and_never_replaced(
    ca: CertificateAuthority, ca_dir: Path, now: dt.datetime
) -> None:
    (ca_dir / "ca" / "intermediate-key.pem").unlink()
    with pytest.raises(PkiInvalid, match=r"incomplete: intermediate-key\.pem missing"):
        CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now)
    assert (ca_dir / "ca" / "root.pem").read_text() == ca.root_pem


def test_a_key_swapped_for_another_is_refused(
    ca_dir: Path, tmp_path: Path, now: dt.datetime
) -> None:
    CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now)
    other = tmp_path / "other"
    CertificateAuthority.load_or_create(other, PASSPHRASE, now=now)
    (ca_dir / "ca" / "intermediate-key.pem").write_bytes(
        (other / "ca" / "intermediate-key.pem").read_bytes()
    )
    with pytest.raises(PkiInvalid, match="does not belong to the certificate"):
        CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now)


def test_an_interrupted_creation_leaves_no_ca_and_the_next_call_creates_one(
    ca_dir: Path, now: dt.datetime
) -> None:
    # What a crash before the commit leaves: a staging directory holding part of a CA.
    staging = ca_dir / ".ca-staging-crashed"
    staging.mkdir(parents=True)
    write(staging / "root-key.pem", b"half a key")
    ca = CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now)
    assert (ca_dir / "ca" / "root.pem").read_text() == ca.root_pem
    assert CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now).root_pem == ca.root_pem


def test_an_empty_ca_directory_is_filled(ca_dir: Path, now: dt.datetime) -> None:
    (ca_dir / "ca").mkdir(parents=True)
    ca = CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now)
    assert (ca_dir / "ca" / "root.pem").read_text() == ca.root_pem


def test_concurrent_creators_end_up_with_one_and_the_same_ca(
    ca_dir: Path, now: dt.datetime
) -> None:
    start = threading.Barrier(8)
    roots: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            start.wait()
            roots.append(CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now).root_pem)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(roots) == 8
    assert len(set(roots)) == 1
    assert [p.name for p in ca_dir.iterdir()] == ["ca"]  # losers cleaned up their staging


def test_a_naive_datetime_is_a_programming_error(ca_dir: Path) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=dt.datetime(2026, 1, 1))
