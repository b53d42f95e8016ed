"""The `rootfs` stage: a Debian root filesystem from packages, by mmdebstrap, as a tar.

Cached by its inputs (suite, mirrors, architecture, package list, builder revision): changing a
module's files does not rerun it, adding a package does. The stage also extracts what later
stages need without reading the whole tar again: the kernel, the
kernel version and the module dependency table (`modules.dep`).

mmdebstrap runs in unshare mode where user namespaces work (no root needed), in root mode
otherwise; a foreign architecture needs qemu-user binfmt support (`arch-test ARCH`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import Invalid, PowernodeError
from powernode.images.spec import ArchInfo

BUILDER_REVISION = "rootfs-3"
"""Bumped when what this stage does changes, so cached outputs are rebuilt."""

AGENT_PACKAGES = (
    "python3",
    "mount",
    "kmod",
    "iproute2",
    "udhcpc",
    "e2fsprogs",
    "erofs-utils",
    "busybox-static",
)
"""What the agent and the node's init need beside the essential set: Python (the agent's
libraries come from PyPI, images/pydeps.py), mount (not essential since bookworm), module
loading, networking (DHCP), filesystems for the state disk and module images, and a static
busybox (the disk loader's tools, see images/loader.py)."""

NO_INITRD_HOOK = (
    'chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && '
    'printf "#!/bin/sh\\n# powernode images make their own initrd (images/loader.py)\\nexit 0\\n" '
    '> "$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs"'
)
"""Installed after the essential packages: the kernel's postinst would otherwise build Debian's
initrd, minutes of work (a quarter of an hour for arm64 under emulation) for a file we do not
use."""

DPKG_EXCLUDES = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
"""Documentation stays out of node images (licences stay in)."""

Progress = Callable[[str], None]


class BuildToolError(PowernodeError):
    """A build tool failed or is missing."""


@dataclass(frozen=True)
class RootfsSpec:
    arch: ArchInfo
    suite: str
    mirrors: tuple[str, ...]
    packages: tuple[str, ...]
    """Sorted, unique, including the kernel and the agent's packages."""
    source_date_epoch: int

    def key(self) -> str:
        doc = {
            "revision": BUILDER_REVISION,
            "arch": self.arch.name,
            "suite": self.suite,
            "mirrors": list(self.mirrors),
            "packages": list(self.packages),
            "dpkg": list(DPKG_EXCLUDES),
            "epoch": self.source_date_epoch,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Rootfs:
    """A finished rootfs stage directory."""

    directory: Path
    tar: Path
    vmlinuz: Path
    kernel_version: str
    modules_dep: dict[str, list[str]]
    """Module file (relative to the kernel's module directory) -> the modules it needs."""
    packages: tuple[str, ...]
    installed: dict[str, str]
    """Package -> version, from the rootfs's dpkg status."""


def rootfs_spec(
    arch: ArchInfo,
    *,
    suite: str,
    mirrors: Iterable[str],
    extra_packages: Iterable[str],
    source_date_epoch: int,
) -> RootfsSpec:
    packages = {*AGENT_PACKAGES, arch.kernel_package, *extra_packages}
    for name in packages:
        if not name or name.startswith("-") or any(c.isspace() or c == "," for c in name):
            raise Invalid(f"package {name!r} is not a valid Debian package name or constraint")
    return RootfsSpec(
        arch=arch,
        suite=suite,
        mirrors=tuple(mirrors),
        packages=tuple(sorted(packages)),
        source_date_epoch=source_date_epoch,
    )


def mmdebstrap_mode(configured: str) -> str:
    if configured != "auto":
        return configured
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0 and shutil.which("newuidmap"):
        return "unshare"
    if os.geteuid() == 0:
        return "root"
    raise BuildToolError(
        "mmdebstrap needs user namespaces (install uidmap and allow unprivileged user "
        "namespaces) or root; set POWERNODE_IMAGE_MMDEBSTRAP_MODE to choose a mode"
    )


def build_rootfs(spec: RootfsSpec, cache_dir: Path, *, mode: str, progress: Progress) -> Rootfs:
    """The cached rootfs for `spec`, building it when missing (resumable: a stage directory
    exists only once complete)."""
    final = cache_dir / "rootfs" / spec.key()
    if (final / "info.json").exists():
        with contextlib.suppress(OSError):
            os.utime(final / "info.json")
        progress("rootfs: cached")
        return load_rootfs(final)
    if shutil.which("mmdebstrap") is None:
        raise BuildToolError("mmdebstrap is not installed (Debian package mmdebstrap)")
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    tar_path = staging / "rootfs.tar"
    argv = [
        "mmdebstrap",
        f"--mode={mmdebstrap_mode(mode)}",
        "--variant=essential",
        f"--architectures={spec.arch.name}",
        "--format=tar",
        f"--include={','.join(spec.packages)}",
        *(f"--dpkgopt={rule}" for rule in DPKG_EXCLUDES),
        f"--essential-hook={NO_INITRD_HOOK}",
        spec.suite,
        str(tar_path),
        *spec.mirrors,
    ]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(spec.source_date_epoch), "LC_ALL": "C.UTF-8"}
    progress(f"rootfs: mmdebstrap {spec.suite} {spec.arch.name} ({len(spec.packages)} packages)")
    proc = subprocess.Popen(  # noqa: S603 - argv list
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    assert proc.stderr is not None
    tail: list[str] = []
    for line in proc.stderr:
        line = line.rstrip()
        tail = [*tail[-30:], line]
        if line.startswith("I: "):
            progress(f"rootfs: {line[3:]}")
    if proc.wait() != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildToolError(
            f"mmdebstrap failed (exit {proc.returncode}) building {spec.suite}/{spec.arch.name}:"
            "\n" + "\n".join(tail[-15:])
        )
    progress("rootfs: extracting the kernel")
    _extract_boot_files(staging)
    (staging / "packages.json").write_text(json.dumps(list(spec.packages)))
    if final.exists():  # another build finished the same stage first
        shutil.rmtree(staging)
    else:
        os.replace(staging, final)
    return load_rootfs(final)


def _extract_boot_files(directory: Path) -> None:
    kernels: dict[str, tarfile.TarInfo] = {}
    deps: dict[str, tarfile.TarInfo] = {}
    status: tarfile.TarInfo | None = None
    with tarfile.open(directory / "rootfs.tar", "r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name == "var/lib/dpkg/status":
                status = member
            elif name.startswith("boot/vmlinuz-") and member.isfile():
                kernels[name.removeprefix("boot/vmlinuz-")] = member
            elif name.startswith("usr/lib/modules/") and name.endswith("/modules.dep"):
                deps[name.split("/")[3]] = member
        if len(kernels) != 1:
            raise BuildToolError(f"expected one kernel in /boot, found {sorted(kernels) or 0}")
        (version,) = kernels
        if version not in deps or status is None:
            raise BuildToolError(f"kernel {version}: its modules.dep or dpkg status is missing")
        for member, out in (
            (kernels[version], "vmlinuz"),
            (deps[version], "modules.dep"),
            (status, "dpkg-status"),
        ):
            source = tar.extractfile(member)
            assert source is not None
            with source, (directory / out).open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
    (directory / "info.json").write_text(json.dumps({"kernel_version": version}))


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        module, _, needs = line.partition(":")
        if module:
            table[module.strip()] = needs.split()
    return table


def installed_packages(status_text: str) -> dict[str, str]:
    """Package -> version of every installed package in a dpkg status file."""
    installed: dict[str, str] = {}
    for stanza in status_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "\t")):
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            installed[fields["Package"]] = fields.get("Version", "")
    return installed


def load_rootfs(directory: Path) -> Rootfs:
    info = json.loads((directory / "info.json").read_text())
    return Rootfs(
        directory=directory,
        tar=directory / "rootfs.tar",
        vmlinuz=directory / "vmlinuz",
        kernel_version=info["kernel_version"],
        modules_dep=parse_modules_dep((directory / "modules.dep").read_text()),
        packages=tuple(json.loads((directory / "packages.json").read_text())),
        installed=installed_packages((directory / "dpkg-status").read_text()),
    )
