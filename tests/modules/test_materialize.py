"""A composed tree written to disk equals its manifest; escapes are refused."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from powernode.errors import Conflict, Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.materialize import materialize
from powernode.modules.store import STAMPS, ContentStore


def tree_of(root: Path) -> list[Entry]:
    """Read a directory back into entries (content as sha256 via the store's hashing)."""
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


def file_entry(
    path: str, sha: str, size: int, mode: int = 0o644, mtime: int = 1_700_000_000
) -> Entry:
    uid, gid = os.geteuid(), os.getegid()  # owned by us, so it is linked even without root
    return Entry(
        path=path, type=FILE, mode=mode, uid=uid, gid=gid, size=size, mtime=mtime, sha256=sha
    )


def dir_entry(path: str) -> Entry:
    return Entry(path=path, type=DIR, mode=0o755, uid=os.geteuid(), gid=os.getegid(), mtime=1)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([dir_entry("a/b")], "parent a is not in the manifest"),
        (
            [file_entry("etc", "0" * 64, 0), file_entry("etc/x", "0" * 64, 0)],
            "lies under etc, which is a file",
        ),
        (
            [
                dir_entry("etc"),
                Entry(path="etc/conf.d", type=SYMLINK, mode=0o777, uid=0, gid=0, target="/run"),
                dir_entry("etc/conf.d/sub"),
            ],
            "lies under the symlink etc/conf.d",
        ),
        ([dir_entry("a"), dir_entry("a")], "appears twice"),
        ([Entry(path="p", type="fifo", mode=0o644, uid=0, gid=0)], "unknown type"),
        ([Entry(path="f", type=FILE, mode=0o644, uid=0, gid=0)], "without a sha256"),
    ],
    ids=["missing-parent", "under-a-file", "under-a-symlink", "twice", "fifo", "no-digest"],
)
def test_an_inconsistent_manifest_is_refused_before_anything_is_written(
    tmp_path: Path, entries: list[Entry], message: str
) -> None:
    with pytest.raises(Invalid, match=message):
        materialize(entries, ContentStore(tmp_path / "store"), tmp_path / "root")
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("kind", [FILE, SYMLINK])
def test_an_extends_override_of_a_directory_composes_and_materializes(
    tmp_path: Path, kind: str
) -> None:
    from powernode.modules.compose import compose
    from powernode.modules.spec import ModuleSpec
    from tests.modules.test_compose import Layer

    store = ContentStore(tmp_path / "store")
    a = store.put_bytes(b"a.conf\n")
    base = [dir_entry("etc"), dir_entry("etc/conf.d"), file_entry("etc/conf.d/a.conf", a, 7)]
    if kind == FILE:
        flat = store.put_bytes(b"one file\n")
        replacement = file_entry("etc/conf.d", flat, 9)
    else:
        replacement = dir_entry("etc/conf.d")._replace(
            type=SYMLINK, mode=0o777, size=9, target="/run/conf"
        )
    child = Layer("child", spec=ModuleSpec(extends="base"))
    composed = compose([(Layer("base"), base), (child, [dir_entry("etc"), replacement])])
    assert composed.conflicts == []
    entries = composed.sorted_entries()
    assert entries == [dir_entry("etc"), replacement]
    materialize(entries, store, tmp_path / "root")
    assert tree_of(tmp_path / "root") == entries


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tamper_append(path: Path) -> None:
    with path.open("ab") as handle:
        handle.write(b"TAMPERED\n")


def tamper_same_size_and_mtime(path: Path) -> None:
    """Rewrite in place, same length, then put the mtime back: only the ctime tells."""
    st = path.stat()
    path.write_bytes(b"HELLO\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def tamper_mode(path: Path) -> None:
    path.chmod(0o600)


@pytest.mark.parametrize("tamper", [tamper_append, tamper_same_size_and_mtime, tamper_mode])
def test_editing_a_composed_tree_in_place_does_not_reach_later_composes(
    tmp_path: Path, tamper: Callable[[Path], None]
) -> None:
    store = ContentStore(tmp_path / "store")
    hello = store.put_bytes(b"hello\n")
    entries = [dir_entry("etc"), file_entry("etc/hello", hello, 6)]
    first = tmp_path / "first"
    assert materialize(entries, store, first).files_linked == 1
    tamper(first / "etc/hello")  # the same inode as the store's, by design
    second = tmp_path / "second"
    assert materialize(entries, store, second).files_linked == 1
    assert tree_of(second) == entries
    assert sha256_of(second / "etc/hello") == hello
    assert (second / "etc/hello").stat().st_ino != (first / "etc/hello").stat().st_ino
    assert sha256_of(store.path(hello)) == hello  # the blob was never linked out
    third = tmp_path / "third"
    materialize(entries, store, third)  # the fresh inode is shared again
    assert (third / "etc/hello").stat().st_ino == (second / "etc/hello").stat().st_ino


def test_an_untouched_inode_is_shared_by_every_compose(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = store.put_bytes(b"shared\n")
    entries = [file_entry("f", data, 7)]
    inodes = set()
    for n in range(3):
        materialize(entries, store, tmp_path / f"t{n}")
        inodes.add((tmp_path / f"t{n}/f").stat().st_ino)
    assert len(inodes) == 1
    assert (tmp_path / "t0/f").stat().st_nlink == 4  # the store's name and three trees
    with store.linker() as links:  # a store without its stamps copies, then shares again
        (store.inodes / STAMPS).unlink()
        links.link(data, 0o644, os.geteuid(), os.getegid(), 1_700_000_000, tmp_path / "g")
        assert links.renewed == 1
    assert (tmp_path / "g").stat().st_ino not in inodes


def test_a_damaged_blob_is_not_composed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = store.put_bytes(b"original\n")
    blob = store.path(data)
    blob.chmod(0o644)
    blob.write_bytes(b"damaged!\n")
    with pytest.raises(Invalid, match="is damaged in the store"):
        materialize([file_entry("f", data, 9)], store, tmp_path / "root")
