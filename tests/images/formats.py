"""Boot inputs for the format tests: a small Debian-like tree tar (merged /usr, owners, modes,
a device node, a FIFO, links, an xattr) and fake kernel files; no real kernel is needed for
structure checks."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

from powernode.images.spec import ARCHES, BootInputs

KVER = "6.1.0-test"
EPOCH = 1_700_000_000
TOOLS_CACHE = Path(
    os.environ.get("POWERNODE_TEST_TOOLS_CACHE", Path.home() / ".cache" / "powernode-tests")
)
"""Where foreign-architecture GRUB modules are kept between runs (fetched once)."""
KERNEL = b"MZ fake kernel " * 64
DISK_INITRD = b"debian initrd " * 64
INITRAMFS = b"powernode initramfs " * 64


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes | None = None,
    *,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    link: str = "",
    **extra: Any,
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = EPOCH - 1000
    info.linkname = link
    for key, value in extra.items():
        setattr(info, key, value)
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def write_tree_tar(path: Path, *, extra_file: bytes = b"") -> None:
    """A deterministic tree tar shaped like the tree stage's."""
    directory = tarfile.DIRTYPE
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "./", kind=directory, mode=0o755)
        for name in ("boot", "dev", "etc", "home", "home/user", "usr", "usr/bin", "usr/lib"):
            _add(tar, f"./{name}/", kind=directory, mode=0o755)
        for name in ("usr/lib/modules", f"usr/lib/modules/{KVER}", "usr/sbin"):
            _add(tar, f"./{name}/", kind=directory, mode=0o755)
        _add(tar, "./root/", kind=directory, mode=0o700)
        _add(tar, "./lib", kind=tarfile.SYMTYPE, mode=0o777, link="usr/lib")
        _add(tar, "./sbin", kind=tarfile.SYMTYPE, mode=0o777, link="usr/sbin")
        _add(tar, "./vmlinuz", kind=tarfile.SYMTYPE, mode=0o777, link=f"boot/vmlinuz-{KVER}")
        _add(tar, f"./boot/vmlinuz-{KVER}", KERNEL)
        _add(tar, f"./boot/initrd.img-{KVER}", DISK_INITRD)
        _add(tar, "./dev/null", kind=tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
        _add(tar, "./dev/initctl", kind=tarfile.FIFOTYPE, mode=0o600)
        _add(tar, "./etc/hostname", b"node\n" + extra_file)
        _add(tar, "./etc/shadow", b"root:*:19000::::::\n", mode=0o640, gid=42)
        _add(tar, "./etc/locked", b"x", mode=0o000)
        _add(tar, "./home/user/notes", b"mine\n", mode=0o600, uid=1000, gid=1000)
        _add(tar, "./usr/bin/su", b"#!/bin/sh\n", mode=0o4755)
        _add(tar, "./usr/bin/su-link", kind=tarfile.SYMTYPE, mode=0o777, link="su")
        _add(tar, "./usr/bin/su-hard", kind=tarfile.LNKTYPE, link="./usr/bin/su")
        ping = tarfile.TarInfo("./usr/bin/ping")
        ping.mode, ping.mtime, ping.size = 0o755, EPOCH, 4
        ping.pax_headers = {"SCHILY.xattr.user.powernode": "test"}
        tar.addfile(ping, io.BytesIO(b"ping"))
        _add(tar, f"./usr/lib/modules/{KVER}/modules.dep", b"")
        _add(tar, "./usr/sbin/init", b"#!/bin/sh\necho init\n", mode=0o755)


def boot_inputs(tmp: Path, *, arch: str = "amd64", **overrides: Any) -> BootInputs:
    """`BootInputs` over a fresh tree tar in `tmp`; keyword overrides replace any field."""
    tmp.mkdir(parents=True, exist_ok=True)
    tree = tmp / "tree.tar"
    if not tree.exists():
        write_tree_tar(tree)
    files = {"vmlinuz": KERNEL, "initrd.img": DISK_INITRD, "initramfs.cpio.zst": INITRAMFS}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    fields: dict[str, Any] = {
        "arch": ARCHES[arch],
        "tree_tar": tree,
        "kernel_version": KVER,
        "vmlinuz": tmp / "vmlinuz",
        "disk_initrd": tmp / "initrd.img",
        "initramfs": tmp / "initramfs.cpio.zst",
        "cmdline": f"console={ARCHES[arch].console} quiet",
        "source_date_epoch": EPOCH,
        "work_dir": tmp / "work",
    }
    fields.update(overrides)
    return BootInputs(**fields)


def pe_machine(data: bytes) -> int:
    """The machine field of a PE executable (0x8664 x86-64, 0xaa64 arm64)."""
    offset = int.from_bytes(data[0x3C:0x40], "little")
    assert data[offset : offset + 4] == b"PE\0\0"
    return int.from_bytes(data[offset + 4 : offset + 6], "little")
