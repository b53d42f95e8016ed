"""A CA created at the real current time, so `openssl` and `ssl` accept its certificates."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from powernode.pki import CertificateAuthority
from tests.pki.factories import PASSPHRASE


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "pki"


@pytest.fixture
def ca(ca_dir: Path, now: dt.datetime) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(ca_dir, PASSPHRASE, now=now)
