"""The disk images' initrd: a small loader that mounts the root filesystem and hands over to the
powernode init on it.

Debian's initramfs-tools would do the same, but generating its initrd inside the rootfs stage
costs minutes (and, for arm64 on an amd64 host, a quarter of an hour under qemu-user
emulation), and its bytes are not reproducible. This one is written by our cpio writer from the
tree: the statically linked busybox (Debian's busybox-static), the storage and filesystem
drivers with what they depend on, and a shell script as /init that loads them, waits for the
root named on the command line (`root=LABEL=...`, `root=UUID=...` or a device path), mounts it
and `switch_root`s to its /sbin/init.
"""

from __future__ import annotations

import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from powernode.errors import Invalid
from powernode.images.cpio import CpioWriter, read_chunks
from powernode.images.initramfs import ZSTD_LEVEL, module_closure

BUSYBOX = "usr/bin/busybox"
DRIVERS = (
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "nvme",
    "crc32c_generic",  # ext4 needs a crc32c implementation (a soft dependency)
    "crc32c_intel",
    "ext4",
)
ROOT_WAIT_S = 30
INIT = f"""#!/bin/busybox sh
# powernode disk loader: mount the root filesystem, then run its /sbin/init.
/bin/busybox mkdir -p /bin /sbin /proc /sys /dev /root
/bin/busybox --install -s
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() {{ echo "powernode-loader: $*" > /dev/console; }}
for module in {" ".join(DRIVERS)}; do modprobe -q "$module"; done
root=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in root=*) root="${{arg#root=}}" ;; esac
done
[ -n "$root" ] || {{ say "no root= on the kernel command line"; exec sh; }}
device=""
tries=0
while [ -z "$device" ] && [ "$tries" -lt {ROOT_WAIT_S * 5} ]; do
    case "$root" in
        LABEL=*|UUID=*) device="$(findfs "$root" 2>/dev/null)" ;;
        *) [ -b "$root" ] && device="$root" ;;
    esac
    [ -n "$device" ] || {{ sleep 0.2; tries=$((tries + 1)); }}
done
[ -n "$device" ] || {{ say "root $root not found after {ROOT_WAIT_S} s"; exec sh; }}
mount -t ext4 -o rw "$device" /root || {{ say "cannot mount $device"; exec sh; }}
say "root $root is $device"
mount --move /dev /root/dev
umount /proc /sys
exec switch_root /root /sbin/init
""".encode()


@dataclass(frozen=True)
class LoaderStats:
    entries: int
    modules: int
    size: int


def write_loader(
    tree_tar: Path,
    out: Path,
    *,
    kernel_version: str,
    modules_dep: dict[str, list[str]],
    epoch: int,
    drivers: Iterable[str] = DRIVERS,
) -> LoaderStats:
    module_dir = f"usr/lib/modules/{kernel_version}/"
    keep = {module_dir + path for path in module_closure(modules_dep, drivers)}
    wanted = keep | {module_dir + "modules.dep", BUSYBOX}
    owner = {"uid": 0, "gid": 0, "mtime": epoch}
    partial = out.with_name(out.name + ".partial")
    params = zstandard.ZstdCompressionParameters.from_level(ZSTD_LEVEL, threads=1)
    found: set[str] = set()
    with (
        partial.open("wb") as raw,
        zstandard.ZstdCompressor(compression_params=params).stream_writer(raw) as sink,
        tarfile.open(tree_tar, "r:") as tar,
    ):
        writer = CpioWriter(sink)
        for name in ("dev", "proc", "sys", "root", "usr", "usr/bin", "usr/lib"):
            writer.directory(name, 0o755, **owner)
        writer.device("dev/console", stat.S_IFCHR, 0o600, (5, 1), **owner)
        for link in ("bin", "lib"):
            writer.symlink(link, f"usr/{link}", **owner)
        writer.file("init", 0o755, len(INIT), iter([INIT]), **owner)
        made: set[str] = {"usr", "usr/bin", "usr/lib"}
        for member in tar:
            if member.name not in wanted or not member.isfile():
                continue
            parts = member.name.split("/")
            for depth in range(2, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in made:
                    writer.directory(parent, 0o755, **owner)
                    made.add(parent)
            handle = tar.extractfile(member)
            assert handle is not None
            with handle:
                writer.file(
                    member.name,
                    member.mode & 0o7777,
                    member.size,
                    read_chunks(handle, member.size),
                    **owner,
                )
            found.add(member.name)
        if BUSYBOX not in found:
            raise Invalid(
                f"the tree has no {BUSYBOX} (Debian package busybox-static): the disk loader "
                "needs it"
            )
        writer.close()
    partial.replace(out)
    return LoaderStats(entries=writer.entries, modules=len(found & keep), size=out.stat().st_size)
