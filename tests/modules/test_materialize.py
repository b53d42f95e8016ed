"""A composed tree written to disk equals its manifest; escapes are refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from powernode.errors import Conflict, Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.materialize import materialize
from powernode.modules.store import ContentStore


def tree_of(root: Path) -> list[Entry]:
    """Read a directory back into entries (content as sha256 via the store's hashing)."""
    import hashlib

    found = []
    for current, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = Path(current) / name
            st = full.lstat()
            rel = full.relative_to(root).as_posix()
            entry = Entry(
                path=rel,
                type=DIR,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                mtime=int(st.st_mtime),
            )
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(full)
                entry = entry._replace(type=SYMLINK, size=len(target), target=target)
            elif not stat.S_ISDIR(st.st_mode):
                sha = hashlib.sha256(full.read_bytes()).hexdigest()
                entry = entry._replace(type=FILE, size=st.st_size, sha256=sha)
            found.append(entry)
    return sorted(found, key=lambda e: e.path)


def test_materialized_tree_equals_the_entries(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    hello = store.put_bytes(b"hello\n")
    secret = store.put_bytes(b"s3cret")
    entries = [
        Entry(path="etc", type=DIR, mode=0o755, uid=0, gid=0, mtime=1_700_000_000),
        Entry(
            path="etc/hello",
            type=FILE,
            mode=0o644,
            uid=0,
            gid=0,
            size=6,
            mtime=1_700_000_001,
            sha256=hello,
        ),
        Entry(
            path="etc/shadow",
            type=FILE,
            mode=0o600,
            uid=0,
            gid=42,
            size=6,
            mtime=1_700_000_002,
            sha256=secret,
        ),
        Entry(
            path="etc/link",
            type=SYMLINK,
            mode=0o777,
            uid=0,
            gid=0,
            size=5,
            mtime=1_700_000_003,
            target="hello",
        ),
        Entry(path="srv", type=DIR, mode=0o700, uid=1000, gid=1000, mtime=1_700_000_004),
        Entry(path="usr", type=DIR, mode=0o555, uid=0, gid=0, mtime=1_700_000_005),
        Entry(
            path="usr/copy-of-hello",
            type=FILE,
            mode=0o644,
            uid=0,
            gid=0,
            size=6,
            mtime=1_700_000_001,
            sha256=hello,
        ),
    ]
    out = tmp_path / "root"
    done = materialize(entries, store, out)
    assert done.files_linked == 3
    assert tree_of(out) == sorted(entries, key=lambda e: e.path)
    # Both files with identical content and metadata share one inode from the store.
    assert (out / "etc/hello").stat().st_ino == (out / "usr/copy-of-hello").stat().st_ino


def test_a_path_under_a_symlink_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = store.put_bytes(b"owned")
    entries = [
        Entry(path="etc", type=SYMLINK, mode=0o777, uid=0, gid=0, target="/tmp"),
        Entry(path="etc/passwd", type=FILE, mode=0o644, uid=0, gid=0, size=5, sha256=data),
    ]
    with pytest.raises(Invalid, match="lies under the symlink etc"):
        materialize(entries, store, tmp_path / "root")
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b", "a//b", "./a"])
def test_paths_that_could_escape_are_refused(tmp_path: Path, path: str) -> None:
    store = ContentStore(tmp_path / "store")
    entries = [Entry(path=path, type=DIR, mode=0o755, uid=0, gid=0)]
    with pytest.raises(Invalid):
        materialize(entries, store, tmp_path / "root")


def test_a_non_empty_target_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "keep").write_text("mine")
    with pytest.raises(Conflict, match="not empty"):
        materialize([], ContentStore(tmp_path / "store"), tmp_path / "root")
