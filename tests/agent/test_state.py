"""The state directory: layout, modes, atomic writes, crash recovery of a renewal."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from powernode.agent.errors import StateError
from powernode.agent.pki import key_and_csr
from powernode.agent.seed import Seed
from powernode.agent.state import StateDir
from tests.agent.ca import TestPki, pem
from tests.agent.conftest import TOKEN

NODE_ID = "0190f3c1-7c2d-7000-8000-000000000002"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _seed(pki: TestPki) -> Seed:
    return Seed(NODE_ID, TOKEN, ("https://127.0.0.1:8443",), pki.root_pem)


def _enrolled(tmp_path: Path, pki: TestPki) -> StateDir:
    state = StateDir(tmp_path / "state")
    state.prepare()
    made = key_and_csr(NODE_ID)
    cert = pem(pki.sign_csr(made.csr_pem))
    state.save_enrollment(
        _seed(pki), {"source": "seed"}, made.key_pem, cert, pki.intermediate_pem, pki.root_pem
    )
    return state


def test_layout_and_modes(tmp_path: Path, test_pki: TestPki) -> None:
    """Dir 0700; key.pem and seed.json 0600; certificates and identity 0644; no temp files."""
    state = _enrolled(tmp_path, test_pki)
    assert _mode(state.root) == 0o700
    modes = {p.name: _mode(p) for p in state.root.iterdir()}
    assert modes == {
        "key.pem": 0o600,
        "seed.json": 0o600,
        "cert.pem": 0o644,
        "chain.pem": 0o644,
        "ca.pem": 0o644,
        "identity.json": 0o644,
    }


def test_prepare_tightens_an_existing_directory(tmp_path: Path) -> None:
    """A state directory that exists with a loose mode becomes 0700."""
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    os.chmod(root, 0o740)
    StateDir(root).prepare()
    assert _mode(root) == 0o700


def test_credentials_read_back(tmp_path: Path, test_pki: TestPki) -> None:
    """Saved credentials load with their seed and validity."""
    state = _enrolled(tmp_path, test_pki)
    found = state.credentials()
    assert found is not None
    assert found.seed == _seed(test_pki)
    assert found.validity.not_after > dt.datetime.now(dt.UTC)


def test_no_credentials_in_an_empty_directory(tmp_path: Path) -> None:
    """A fresh state directory has no credentials and no saved seed."""
    state = StateDir(tmp_path / "state")
    state.prepare()
    assert state.credentials() is None
    assert state.saved_seed() is None


def test_a_key_that_does_not_match_the_certificate_is_no_credential(
    tmp_path: Path, test_pki: TestPki
) -> None:
    """If key.pem is not the certificate's key, the node has no usable credentials."""
    state = _enrolled(tmp_path, test_pki)
    state.key.write_text(key_and_csr(NODE_ID).key_pem)
    assert state.credentials() is None


def test_renewal_replaces_key_and_certificate(tmp_path: Path, test_pki: TestPki) -> None:
    """A staged key becomes key.pem (0600) once its certificate is committed."""
    state = _enrolled(tmp_path, test_pki)
    made = key_and_csr(NODE_ID)
    state.stage_key(made.key_pem)
    assert _mode(state.next_key) == 0o600
    renewed = state.commit_renewal(
        pem(test_pki.sign_csr(made.csr_pem)), test_pki.intermediate_pem, test_pki.root_pem
    )
    assert state.key.read_text() == made.key_pem
    assert _mode(state.key) == 0o600
    assert not state.next_key.exists()
    assert renewed.cert_pem == state.cert.read_text()


def test_prepare_finishes_a_renewal_interrupted_after_the_certificate(
    tmp_path: Path, test_pki: TestPki
) -> None:
    """Crash after cert.pem was written but before the key rename: prepare() completes it."""
    state = _enrolled(tmp_path, test_pki)
    made = key_and_csr(NODE_ID)
    state.stage_key(made.key_pem)
    state.cert.write_text(pem(test_pki.sign_csr(made.csr_pem)))
    StateDir(state.root).prepare()
    assert state.key.read_text() == made.key_pem
    assert state.credentials() is not None


def test_prepare_discards_a_renewal_that_got_no_certificate(
    tmp_path: Path, test_pki: TestPki
) -> None:
    """Crash before the certificate arrived: the staged key goes, the old credentials stay."""
    state = _enrolled(tmp_path, test_pki)
    old_key = state.key.read_text()
    state.stage_key(key_and_csr(NODE_ID).key_pem)
    StateDir(state.root).prepare()
    assert not state.next_key.exists()
    assert state.key.read_text() == old_key
    assert state.credentials() is not None


def test_commit_without_a_staged_key_is_refused(tmp_path: Path, test_pki: TestPki) -> None:
    """commit_renewal needs a renewal in progress."""
    state = _enrolled(tmp_path, test_pki)
    with pytest.raises(StateError, match="no renewal in progress"):
        state.commit_renewal("x", "y", "z")
