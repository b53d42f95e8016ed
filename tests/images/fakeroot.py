"""A small synthetic Debian-like rootfs stage, so pipeline tests run without mmdebstrap."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from powernode.images.rootfs import RootfsSpec

KVER = "6.1.0-test-amd64"
MODULES_DEP = (
    "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko "
    "kernel/net/core/failover.ko\n"
    "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
    "kernel/net/core/failover.ko:\n"
    "kernel/drivers/gpu/drm/big.ko:\n"
    "kernel/fs/overlayfs/overlay.ko:\n"
    "kernel/drivers/block/virtio_blk.ko:\n"
    "kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\n"
    "kernel/fs/jbd2/jbd2.ko:\n"
)
STATUS = (
    "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1+b1\n\n"
    "Package: jq\nStatus: install ok installed\nVersion: 1.6-2.1\n"
)


def _add(
    tar: tarfile.TarFile,
    name: str,
    data: bytes | None = None,
    *,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    link: str = "",
    mtime: int = 1_800_000_000,
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.linkname = link
    info.uname = info.gname = "root"
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def write_rootfs_tar(path: Path) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        # mmdebstrap's order is not sorted: /dev first.
        _add(tar, "./dev/", kind=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "./dev/console", kind=tarfile.CHRTYPE, mode=0o600)
        _add(tar, "./", kind=tarfile.DIRTYPE, mode=0o755)
        for d in (
            "etc",
            "usr",
            "usr/bin",
            "usr/sbin",
            "usr/lib",
            "boot",
            "var",
            "var/lib",
            "usr/lib/modules",
            f"usr/lib/modules/{KVER}",
            f"usr/lib/modules/{KVER}/kernel",
            "usr/lib/python3",
            "usr/lib/python3/dist-packages",
            "var/lib/dpkg",
        ):
            _add(tar, f"./{d}/", kind=tarfile.DIRTYPE, mode=0o755)
        for link in ("bin", "sbin", "lib"):
            _add(tar, f"./{link}", kind=tarfile.SYMTYPE, mode=0o777, link=f"usr/{link}")
        _add(tar, "./etc/os-release", b"ID=debian\n")
        _add(tar, "./etc/hostname", b"base\n")
        _add(tar, "./usr/bin/python3.11", b"\x7fELF fake python", mode=0o755)
        _add(tar, "./usr/bin/python3", kind=tarfile.SYMTYPE, mode=0o777, link="python3.11")
        _add(tar, "./usr/bin/busybox", b"\x7fELF static busybox", mode=0o755)
        _add(tar, "./usr/bin/hardlinked", kind=tarfile.LNKTYPE, link="./usr/bin/python3.11")
        _add(tar, f"./boot/vmlinuz-{KVER}", b"KERNEL" * 100)
        _add(tar, f"./boot/initrd.img-{KVER}", b"INITRD" * 100)
        _add(tar, f"./usr/lib/modules/{KVER}/modules.dep", MODULES_DEP.encode())
        for module in (
            "drivers/net/virtio_net.ko",
            "drivers/net/net_failover.ko",
            "net/core/failover.ko",
            "drivers/gpu/drm/big.ko",
            "fs/overlayfs/overlay.ko",
            "drivers/block/virtio_blk.ko",
            "fs/ext4/ext4.ko",
            "fs/jbd2/jbd2.ko",
        ):
            parts = module.split("/")
            for depth in range(1, len(parts)):
                _add(
                    tar,
                    f"./usr/lib/modules/{KVER}/kernel/{'/'.join(parts[:depth])}/",
                    kind=tarfile.DIRTYPE,
                    mode=0o755,
                )
            _add(tar, f"./usr/lib/modules/{KVER}/kernel/{module}", module.encode() * 50)
        _add(tar, "./var/lib/dpkg/status", STATUS.encode())


def install_fake_rootfs(cache_dir: Path, spec: RootfsSpec) -> Path:
    """Put a finished rootfs stage for `spec` into `cache_dir` (what build_rootfs would make)."""
    directory = cache_dir / "rootfs" / spec.key()
    directory.mkdir(parents=True)
    write_rootfs_tar(directory / "rootfs.tar")
    (directory / "vmlinuz").write_bytes(b"KERNEL" * 100)
    (directory / "modules.dep").write_text(MODULES_DEP)
    (directory / "dpkg-status").write_text(STATUS)
    (directory / "packages.json").write_text(json.dumps(list(spec.packages)))
    (directory / "info.json").write_text(json.dumps({"kernel_version": KVER}))
    return directory
