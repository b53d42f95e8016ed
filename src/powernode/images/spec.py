"""What the image builder knows about each architecture and format, and the hand-off between
its stages.

The build runs in stages (images/build.py): `rootfs` (mmdebstrap, cached by its package list),
`tree` (the rootfs with the composed module tree, the agent and its init on top, as one
deterministic tar), then one stage per format, each reading the tree tar and the kernel files
and writing its files into an output directory. `BootInputs` is what a format stage gets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from powernode.errors import Invalid


class Format(enum.StrEnum):
    INITRAMFS = "initramfs"
    """Kernel + initramfs bundle: the whole node in RAM."""
    DISK = "disk"
    """Raw GPT disk image: EFI system partition + ext4 root."""
    ISO = "iso"
    IPXE = "ipxe"
    QCOW2 = "qcow2"
    BOOTC = "bootc"


ALL_FORMATS = tuple(Format)


@dataclass(frozen=True)
class ArchInfo:
    name: str
    """amd64 | arm64 (Debian's names)."""
    kernel_package: str
    qemu_system: str
    qemu_machine: str
    console: str
    """The serial console device the kernel command line names."""
    efi_boot_file: str
    """The removable-media boot path's file name under `EFI/BOOT/`."""
    grub_efi_target: str
    grub_efi_package: str
    firmware_code: tuple[Path, ...]
    """UEFI firmware (read-only code) candidates, first existing wins."""
    firmware_vars: tuple[Path, ...]
    """UEFI variable store templates, copied per VM."""
    oci_architecture: str


ARCHES: dict[str, ArchInfo] = {
    "amd64": ArchInfo(
        name="amd64",
        kernel_package="linux-image-amd64",
        qemu_system="qemu-system-x86_64",
        qemu_machine="q35",
        console="ttyS0",
        efi_boot_file="BOOTX64.EFI",
        grub_efi_target="x86_64-efi",
        grub_efi_package="grub-efi-amd64-bin",
        firmware_code=(
            Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            Path("/usr/share/OVMF/OVMF_CODE.fd"),
        ),
        firmware_vars=(
            Path("/usr/share/OVMF/OVMF_VARS_4M.fd"),
            Path("/usr/share/OVMF/OVMF_VARS.fd"),
        ),
        oci_architecture="amd64",
    ),
    "arm64": ArchInfo(
        name="arm64",
        kernel_package="linux-image-arm64",
        qemu_system="qemu-system-aarch64",
        qemu_machine="virt",
        console="ttyAMA0",
        efi_boot_file="BOOTAA64.EFI",
        grub_efi_target="arm64-efi",
        grub_efi_package="grub-efi-arm64-bin",
        firmware_code=(Path("/usr/share/AAVMF/AAVMF_CODE.fd"),),
        firmware_vars=(Path("/usr/share/AAVMF/AAVMF_VARS.fd"),),
        oci_architecture="arm64",
    ),
}


def arch_info(arch: str) -> ArchInfo:
    try:
        return ARCHES[arch]
    except KeyError:
        raise Invalid(f"unknown architecture {arch!r}; use one of: {', '.join(ARCHES)}") from None


def parse_formats(text: str | None) -> tuple[Format, ...]:
    """`--format a,b` (None or empty: every format), in the canonical order."""
    if not text:
        return ALL_FORMATS
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - {f.value for f in Format})
    if unknown:
        raise Invalid(
            f"unknown image format(s) {', '.join(unknown)}; "
            f"use one or more of: {', '.join(f.value for f in Format)}"
        )
    return tuple(f for f in ALL_FORMATS if f.value in wanted)


STATE_LABEL = "pn-state"
"""Filesystem label of a node's state disk (the agent's identity and module store)."""
ROOT_LABEL = "pn-root"
"""Filesystem label of the disk image's root partition."""
ESP_LABEL = "PN-ESP"


@dataclass(frozen=True)
class BootInputs:
    """What a format stage reads. Every path is a file the tree stage wrote; none is changed."""

    arch: ArchInfo
    tree_tar: Path
    """The node's whole root filesystem as an uncompressed tar, deterministic (sorted entries,
    mtimes clamped to `source_date_epoch`, owners numeric). It contains `/boot/vmlinuz-<kver>`,
    `/usr/lib/modules/<kver>/` and `/sbin/init` (the powernode init)."""
    kernel_version: str
    vmlinuz: Path
    """The kernel, extracted from the tree."""
    disk_initrd: Path
    """The loader initrd for booting from a disk (images/loader.py): it mounts the root named
    by `root=` (`LABEL=pn-root`) and runs its /sbin/init."""
    initramfs: Path
    """Our RAM-boot initramfs (the initramfs format's file): the whole node, `/init` first."""
    cmdline: str
    """Kernel command line for the RAM boot (console, quiet, ...); disk boots add `root=`."""
    source_date_epoch: int
    work_dir: Path
    """Scratch space for this stage (removed after it)."""


@dataclass(frozen=True)
class BuiltFile:
    name: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class FormatResult:
    """A format stage's output: its files (main file first) and format-specific facts."""

    format: Format
    files: tuple[BuiltFile, ...]
    details: dict[str, object]
    digest: str | None = None
    """Set when the artifact's identity is not its main file's sha256 (bootc: the manifest)."""
