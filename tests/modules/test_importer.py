"""Reading a module tree from a tar: file_spec first, names, hard links, special files, and the
spec given as module.toml or as API fields."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from powernode.errors import Invalid
from powernode.modules.entries import encode_entries
from powernode.modules.importer import (
    DEFAULT,
    FIELDS,
    MODULE_TOML,
    ImportedTree,
    ModuleFields,
    read_tree,
)
from powernode.modules.spec import ModuleSpec
from powernode.modules.store import ContentStore

Member = Callable[[tarfile.TarFile], None]


def regular(name: str, data: bytes = b"x") -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    return add


def special(name: str, kind: bytes, linkname: str = "") -> Member:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        tar.addfile(info)

    return add


def directory(name: str) -> Member:
    return special(name, tarfile.DIRTYPE)


def toml(text: str) -> Member:
    return regular(MODULE_TOML, text.encode())


def tar_bytes(*members: Member) -> bytes:
    out = io.BytesIO()
    # PAX keeps names as the bytes they are (surrogateescape), non-UTF-8 ones included.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for add in members:
            add(tar)
    return out.getvalue()


class OneWay(io.RawIOBase):
    """A stream that cannot seek, like a socket."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def read(
    store: ContentStore,
    data: bytes | IO[bytes],
    fields: ModuleFields | None = None,
) -> ImportedTree:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    return read_tree(stream, store, fields=fields, preserve_owner=False)


def paths(tree: ImportedTree) -> list[str]:
    return [e.path for e in tree.entries]


def test_backslashes_are_ordinary_name_characters(store: ContentStore) -> None:
    """systemd's escaped unit names hold backslashes; they are file names, not separators."""
    name = "lib/systemd/system/system-systemd\\x2dcryptsetup.slice"
    tree = read(store, tar_bytes(regular(name)))
    assert paths(tree) == ["lib", "lib/systemd", "lib/systemd/system", name]
    encode_entries(tree.entries)  # and the entry list can be stored


def test_a_name_that_is_not_utf8_is_refused_naming_it_escaped(store: ContentStore) -> None:
    """Entry lists are JSON text: a non-UTF-8 name is a clear error, shown with \\x escapes."""
    bad = b"etc/caf\xe9.conf".decode("utf-8", "surrogateescape")
    with pytest.raises(Invalid) as caught:
        read(store, tar_bytes(regular("etc/ok"), regular(bad)))
    assert "etc/caf\\xe9.conf: its name is not valid UTF-8" in caught.value.detail
    assert caught.value.extra["path"] == "etc/caf\\xe9.conf"
    caught.value.detail.encode("utf-8")  # the message itself is clean text


def test_a_symlink_target_that_is_not_utf8_is_refused(store: ContentStore) -> None:
    """A link target is stored as text as well."""
    target = b"/opt/\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(
        Invalid, match=r"etc/link: its link target is not valid UTF-8 \('/opt/\\xff'\)"
    ):
        read(store, tar_bytes(special("etc/link", tarfile.SYMTYPE, target)))


def test_names_file_spec_excludes_are_not_checked(store: ContentStore) -> None:
    """What the module does not hold cannot break it: not its name, not its type."""
    bad = b"doc/\xe9".decode("utf-8", "surrogateescape")

    def tree(fifo: str) -> bytes:
        return tar_bytes(
            toml('file_spec = ["- /doc/", "- /dev/***"]'),
            regular("etc/motd"),
            regular(bad),
            special("dev/null", tarfile.CHRTYPE),
            special("dev/initctl", tarfile.FIFOTYPE),
            special(fifo, tarfile.FIFOTYPE),
        )

    with pytest.raises(Invalid, match=r"^run/fifo is a device, fifo or socket"):
        read(store, tree("run/fifo"))
    assert paths(read(store, tree("dev/fifo"))) == ["etc", "etc/motd"]


def test_a_hard_link_to_a_file_excluded_by_file_spec_gets_its_content(
    store: ContentStore,
) -> None:
    """`pack` writes a second name of a file as a hard link to the first; excluding the first
    name must not lose the second."""
    data = tar_bytes(
        toml('file_spec = "- /a/"'),
        regular("a/x", b"shared bytes"),
        special("b/x", tarfile.LNKTYPE, "a/x"),
        special("b/y", tarfile.LNKTYPE, "./a/x"),
    )
    tree = read(store, data)
    assert paths(tree) == ["b", "b/x", "b/y"]
    linked = tree.entries[1]
    assert linked.size == len(b"shared bytes")
    assert linked.sha256 is not None
    assert store.path(linked.sha256).read_bytes() == b"shared bytes"
    assert tree.entries[2].sha256 == linked.sha256
    gz = read(store, gzip.compress(data))  # compressed archives can be read back too
    assert gz.entries == tree.entries


def test_a_hard_link_to_an_excluded_file_in_a_one_way_stream_says_what_to_do(
    store: ContentStore,
) -> None:
    """Without seeking, the excluded content is gone when the link arrives: a clear error."""
    data = tar_bytes(
        toml('file_spec = "- /a/"'),
        regular("a/x"),
        special("b/x", tarfile.LNKTYPE, "a/x"),
    )
    with pytest.raises(Invalid, match="hard link to a/x, which file_spec excludes"):
        read(store, io.BufferedReader(OneWay(data)))


def test_a_hard_link_to_a_selected_file_shares_its_digest(store: ContentStore) -> None:
    """The usual case: both names selected, one content."""
    tree = read(store, tar_bytes(regular("a", b"1"), special("b", tarfile.LNKTYPE, "a")))
    assert tree.entries[0].sha256 == tree.entries[1].sha256


def test_a_hard_link_to_nothing_is_refused(store: ContentStore) -> None:
    """A link whose target never appeared is malformed."""
    with pytest.raises(Invalid, match="b is a hard link to a, which is not a file before it"):
        read(store, tar_bytes(special("b", tarfile.LNKTYPE, "a")))


def test_module_toml_after_an_excluded_member_is_still_refused(store: ContentStore) -> None:
    """The spec decides what is selected, so it must come before any member, selected or not."""
    data = tar_bytes(regular("x"), toml('file_spec = "- x"'))
    with pytest.raises(Invalid, match="must be the first member"):
        read(store, data)


def test_a_bad_file_spec_in_an_empty_tree_is_refused(store: ContentStore) -> None:
    """Rules are checked when the spec is read, whether or not a file follows."""
    with pytest.raises(Invalid, match="key 'file_spec': line 1: 'x bad'"):
        read(store, tar_bytes(toml('file_spec = "x bad"')))


def test_a_truncated_archive_is_invalid(store: ContentStore) -> None:
    """A tar cut in the middle of a member is a client error, not a server error."""
    data = tar_bytes(regular("a", b"x" * 5000))
    with pytest.raises(Invalid, match="not a readable tar archive"):
        read(store, data[:1500])


SPEC = ModuleSpec(file_spec="- /doc/\n", package_spec=["curl"])


def test_the_spec_can_come_as_fields(store: ContentStore) -> None:
    """Without a module.toml, the API's fields are the spec; they select the files too."""
    data = tar_bytes(regular("doc/a"), regular("etc/b"))
    tree = read(store, data, ModuleFields(None, "1.0", SPEC))
    assert (tree.spec, tree.version, tree.spec_source) == (SPEC, "1.0", FIELDS)
    assert paths(tree) == ["etc", "etc/b"]
    assert read(store, data).spec_source == DEFAULT


def test_fields_and_an_equal_module_toml_agree(store: ContentStore) -> None:
    """The same spec twice is fine (the older key name counts as the same key)."""
    data = tar_bytes(
        toml('version = "1.0"\nfile_spec = "- /doc/"\npackages = ["curl"]\n'), regular("doc/a")
    )
    tree = read(store, data, ModuleFields(None, None, SPEC))
    assert (tree.spec, tree.version, tree.spec_source) == (SPEC, "1.0", MODULE_TOML)
    assert tree.entries == []


def test_fields_and_a_different_module_toml_are_refused(store: ContentStore) -> None:
    """Two different specs for one import: refused, naming what differs."""
    data = tar_bytes(toml('version = "2.0"\nfile_spec = "- /etc/"\n'), regular("a"))
    with pytest.raises(Invalid) as caught:
        read(store, data, ModuleFields(None, "1.0", SPEC))
    assert "module.toml and the spec parameter differ in version, file_spec, package_spec" in (
        caught.value.detail
    )


@pytest.mark.parametrize(
    ("first", "kind"),
    [(special("a", tarfile.SYMTYPE, "/etc"), "symlink"), (regular("a"), "file")],
    ids=["under-a-symlink", "under-a-file"],
)
def test_a_member_under_a_non_directory_is_refused(
    store: ContentStore, first: Member, kind: str
) -> None:
    """`a` then `a/b` is not a tree: it cannot be composed, and through a symlink it would
    write outside the module."""
    with pytest.raises(Invalid) as caught:
        read(store, tar_bytes(first, regular("a/b")))
    assert caught.value.detail.startswith(f"'a/b' lies under 'a', which is a {kind}")
