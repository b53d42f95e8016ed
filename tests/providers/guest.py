"""A tiny real guest for the qemu provider's boot test: Debian's kernel (downloaded once into
~/.cache/powernode-tests) and an initramfs built here from busybox-static and the kernel's
fw_cfg and virtio-net modules, whose /init runs a script and powers off."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
MODULES = ("qemu_fw_cfg", "virtio_pci", "virtio_net")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "powernode-tests"


@dataclass(frozen=True)
class Kernel:
    vmlinuz: Path
    modules: Path
    """`lib/modules/<version>`."""


def debian_kernel(arch: str = "amd64") -> Kernel:
    """Debian's current kernel package for `arch`, extracted once into the cache."""
    package = _kernel_package(arch)
    root = cache_dir() / package
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        download = root.with_name(root.name + ".download")
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir(parents=True)
        subprocess.run(
            ["apt-get", "download", f"{package}:{arch}"],
            cwd=download,
            check=True,
            capture_output=True,
        )
        (deb,) = download.glob("*.deb")
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        shutil.rmtree(download)
        (root / ".done").touch()
    (vmlinuz,) = (root / "boot").glob("vmlinuz-*")
    (modules,) = (root / "lib" / "modules").iterdir()
    return Kernel(vmlinuz, modules)


def _kernel_package(arch: str) -> str:
    shown = subprocess.run(
        ["apt-cache", "depends", f"linux-image-{arch}"], check=True, capture_output=True, text=True
    ).stdout
    found = re.search(r"Depends: (linux-image-[0-9][^\s:]*)", shown)
    if found is None:
        raise RuntimeError(f"apt-cache depends linux-image-{arch} names no kernel: {shown}")
    return found.group(1)


def module_order(modules: Path, wanted: tuple[str, ...] = MODULES) -> list[Path]:
    """The .ko files of `wanted` and their dependencies, dependencies first (read from each
    module's `depends=` modinfo field; the package has no modules.dep before depmod)."""
    index = {p.name.removesuffix(".ko").replace("-", "_"): p for p in modules.rglob("*.ko")}
    order: list[Path] = []

    def add(name: str) -> None:
        path = index[name]
        if path in order:
            return
        found = re.search(rb"depends=([^\0]*)\0", path.read_bytes())
        for dep in found.group(1).split(b",") if found else []:
            if dep:
                add(dep.decode())
        order.append(path)

    for name in wanted:
        add(name)
    return order


def _newc(name: str, mode: int, data: bytes, ino: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    return out + data + b"\0" * (-len(data) % 4)


def initramfs(kernel: Kernel, init_script: str, target: Path) -> Path:
    """An uncompressed newc cpio: busybox, the modules (loaded in order by /init before
    `init_script` runs) and /init."""
    modules = module_order(kernel.modules)
    loads = "\n".join(f"insmod /modules/{p.name}" for p in modules)
    init = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
{loads}
{init_script}
poweroff -f
"""
    entries: list[tuple[str, int, bytes]] = [
        (d, stat.S_IFDIR | 0o755, b"") for d in ("bin", "dev", "proc", "sys", "modules")
    ]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes()))
    entries += [(f"modules/{p.name}", stat.S_IFREG | 0o644, p.read_bytes()) for p in modules]
    entries.append(("init", stat.S_IFREG | 0o755, init.encode()))
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries, start=1):
        out += _newc(name, mode, data, ino)
    out += _newc("TRAILER!!!", 0, b"", 0)
    out += b"\0" * (-len(out) % 512)
    target.write_bytes(out)
    return target
