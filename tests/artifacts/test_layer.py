"""The safe layer reader refuses hostile or damaged layers, built by hand with tarfile + zstd."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from typing import Any

import pytest
import zstandard

from powernode.artifacts.layer import LayerError, LayerMember, read_module_layer
from powernode.errors import Invalid
from tests.artifacts.factories import noise

Member = tuple[str, bytes | None, dict[str, Any]]


def tar_bytes(members: Sequence[Member]) -> bytes:
    """A tar of (name, content or None, TarInfo attributes) members."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content, attrs in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            for key, value in attrs.items():
                setattr(info, key, value)
            if content is not None:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def layer(*members: Member) -> bytes:
    return zst(tar_bytes(members))


def read_all(data: bytes, **limits: Any) -> list[LayerMember]:
    """Every member, reading every file's content, as the agent's extraction would."""
    found = []
    for member in read_module_layer(io.BytesIO(data), **limits):
        if member.content is not None:
            while member.content.read(65536):
                pass
        found.append(member)
    return found


def refused(data: bytes, member: str | None, cause: str, **limits: Any) -> LayerError:
    with pytest.raises(LayerError) as caught:
        read_all(data, **limits)
    assert caught.value.member == member, caught.value.detail
    assert cause in caught.value.detail
    assert isinstance(caught.value, Invalid)
    return caught.value


DIR = {"type": tarfile.DIRTYPE, "mode": 0o755}


def file(name: str, content: bytes = b"data\n", **attrs: Any) -> Member:
    return (name, content, attrs)


def symlink(name: str, target: str) -> Member:
    return (name, None, {"type": tarfile.SYMTYPE, "linkname": target, "mode": 0o777})


def hardlink(name: str, source: str) -> Member:
    return (name, None, {"type": tarfile.LNKTYPE, "linkname": source})


def test_a_clean_layer_reads_back_with_every_member() -> None:
    """Directories, files, relative and absolute in-root symlinks and hard links are fine."""
    data = layer(
        ("etc", None, DIR),
        file("etc/a.conf", b"a\n", uid=1000, gid=100, mtime=1_700_000_000),
        symlink("etc/b.conf", "a.conf"),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        hardlink("etc/c.conf", "etc/a.conf"),
        ("var/mail", None, {**DIR, "mode": 0o2775}),
    )
    members = read_all(data)
    assert [(m.path, m.type) for m in members] == [
        ("etc", "dir"),
        ("etc/a.conf", "file"),
        ("etc/b.conf", "symlink"),
        ("etc/localtime", "symlink"),
        ("etc/c.conf", "hardlink"),
        ("var/mail", "dir"),
    ]
    a_conf = members[1]
    assert (a_conf.uid, a_conf.gid, a_conf.mtime, a_conf.size) == (1000, 100, 1_700_000_000, 2)
    assert members[4].target == "etc/a.conf"


@pytest.mark.parametrize(
    ("members", "member", "cause"),
    [
        ([file("/etc/passwd")], "/etc/passwd", "absolute path"),
        (
            [file("etc/../../root/.ssh/authorized_keys")],
            "etc/../../root/.ssh/authorized_keys",
            "'..'",
        ),
        ([symlink("etc/evil", "../../etc/shadow")], "etc/evil", "out of the root"),
        ([symlink("up", "..")], "up", "out of the root"),
        (
            [("d", None, DIR), symlink("d/up", ".."), symlink("esc", "d/up/..")],
            "esc",
            "out of the root",
        ),
        ([symlink("etc", "/tmp"), file("etc/passwd")], "etc/passwd", "through the symlink 'etc'"),
        ([hardlink("shadow", "../../etc/shadow")], "../../etc/shadow", "'..'"),
        ([hardlink("shadow", "/etc/shadow")], "/etc/shadow", "absolute path"),
        ([hardlink("early", "later"), file("later")], "early", "not to an earlier file"),
        ([("dev/sda", None, {"type": tarfile.BLKTYPE})], "dev/sda", "device node"),
        ([("dev/mem", None, {"type": tarfile.CHRTYPE})], "dev/mem", "device node"),
        ([("run/pipe", None, {"type": tarfile.FIFOTYPE})], "run/pipe", "fifo"),
        ([file("usr/bin/su", mode=0o4755)], "usr/bin/su", "setuid or setgid"),
        ([file("usr/bin/wall", mode=0o2755)], "usr/bin/wall", "setuid or setgid"),
        ([file("a"), file("a")], "a", "appears twice"),
        ([file("a"), file("a/b")], "a/b", "parent 'a' is not a directory"),
        ([file("a/b"), file("a")], "a", "needs this path to be a directory"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_hostile_members_are_refused_naming_the_member(
    members: list[Member], member: str, cause: str
) -> None:
    """Each hostile member is refused with its name and the reason."""
    refused(layer(*members), member, cause)


def test_backslashes_are_ordinary_name_bytes() -> None:
    """systemd's escaped unit names (`\\x2d`) are valid Linux paths; `..\\` is just a name."""
    name = "lib/systemd/system/system-systemd\\x2dcryptsetup.slice"
    members = read_all(layer(file(name), file("..\\x"), symlink("s", "a\\b")))
    assert [m.path for m in members] == [name, "..\\x", "s"]
    assert members[2].target == "a\\b"


def test_setuid_files_pass_when_allowed() -> None:
    """`allow_setid` lets a module ship setuid programs such as su."""
    [member] = read_all(layer(file("usr/bin/su", mode=0o4755)), allow_setid=True)
    assert member.mode == 0o4755


def test_a_symlink_chain_that_climbs_out_is_refused_once_all_are_known() -> None:
    """A link through a later link is resolved at the end of the layer."""
    data = layer(symlink("a", "b/../.."), ("b", None, DIR), symlink("b/c", "."))
    refused(data, "a", "out of the root")


@pytest.mark.parametrize("cut", [1, 4, 20, 0.5, 0.9])
def test_a_truncated_stream_is_refused(cut: float) -> None:
    """Cutting the compressed layer anywhere, even in its checksum, is noticed."""
    data = layer(("etc", None, DIR), file("etc/a", b"x" * 5000), file("etc/b", noise("b", 9000)))
    keep = len(data) - int(cut) if cut >= 1 else int(len(data) * cut)
    with pytest.raises(LayerError, match=r"truncated|damaged"):
        read_all(data[:keep])


def test_layers_of_several_frames_and_skippable_frames_read_whole() -> None:
    """zstd streams may hold several frames and skippable frames; both are complete layers."""
    whole = tar_bytes([file("a", noise("a", 3000)), file("b", b"b")])
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"pad"
    data = skippable + zst(whole[:1000]) + zstandard.ZstdCompressor().compress(whole[1000:])
    assert [m.path for m in read_all(data)] == ["a", "b"]
    with pytest.raises(LayerError, match="zstd stream is truncated"):
        read_all(data + skippable[:6])


def test_a_tar_cut_at_a_member_boundary_is_refused() -> None:
    """A complete zstd frame around a tar that stops between members is still truncated."""
    whole = tar_bytes([file("a", b"1" * 512), file("b", b"2" * 512)])
    refused(zst(whole[:1024]), None, "tar stream is truncated")


def test_data_after_the_layer_is_refused() -> None:
    """Bytes after the zstd stream, or after the tar's end, are refused."""
    data = layer(file("a"))
    with pytest.raises(LayerError, match=r"zstd stream"):
        read_all(data + b"trailing garbage")
    after_tar = zst(tar_bytes([file("a")]) + b"hidden")
    refused(after_tar, None, "data after its end")


def test_an_oversized_member_is_refused() -> None:
    """A member over `max_member_size` is refused before its content is read."""
    refused(layer(file("big", b"x" * 2000)), "big", "over the limit of 1000", max_member_size=1000)


def test_an_oversized_layer_is_refused() -> None:
    """A compressed layer over `max_layer_size` (or over its declared size) is refused."""
    data = layer(file("noise", noise("n", 4000)))
    with pytest.raises(LayerError, match="larger than the limit of 1000 bytes"):
        read_all(data, max_layer_size=1000)
    with pytest.raises(LayerError, match="larger than its declared 100 bytes"):
        read_all(data, expected_size=100)


def test_a_decompression_bomb_stops_at_the_tree_limit() -> None:
    """A small layer that inflates past `max_tree_size` is refused without inflating it all."""
    bomb = layer(file("zeros", bytes(64 << 20)))
    assert len(bomb) < 64 << 10
    with pytest.raises(LayerError, match="tree is larger than the limit"):
        read_all(bomb, max_tree_size=1 << 20)


def test_a_layer_with_another_digest_is_refused() -> None:
    """The layer's digest and size are checked against the descriptor's."""
    data = layer(file("a"))
    refused(data, None, "not the declared sha256:" + "0" * 64, expected_digest="sha256:" + "0" * 64)
    refused(data, None, f"has {len(data)} bytes, not the declared", expected_size=len(data) + 1)


def test_not_a_zstd_stream_is_refused() -> None:
    """A gzip or plain tar is not a module layer."""
    with pytest.raises(LayerError):
        read_all(tar_bytes([file("a")]))


def test_the_reader_imports_nothing_of_the_server_stack() -> None:
    """The agent can import the reader without fastapi, sqlalchemy, pydantic or httpx."""
    script = (
        "import sys, powernode.artifacts.layer; "
        "bad = [m for m in ('fastapi', 'sqlalchemy', 'pydantic', 'httpx', 'orjson') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
