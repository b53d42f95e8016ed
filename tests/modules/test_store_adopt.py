"""Large build outputs enter the content store by hard link, checked against their digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from powernode.errors import Invalid
from powernode.modules.store import ContentStore


def test_a_file_is_adopted_by_link_and_a_mismatch_is_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    source = tmp_path / "disk.raw"
    source.write_bytes(b"disk image bytes")
    sha = hashlib.sha256(b"disk image bytes").hexdigest()
    with pytest.raises(Invalid, match="does not match its digest"):
        store.adopt(source, "0" * 64)
    assert not store.has("0" * 64)
    assert not [p for p in store.blobs.iterdir() if p.name.startswith(".adopting-")]
    assert store.adopt(source, sha)
    assert store.path(sha).stat().st_ino == source.stat().st_ino  # no copy was made
    assert store.read_bytes(sha) == b"disk image bytes"
    assert store.adopt(source, sha)  # already there
