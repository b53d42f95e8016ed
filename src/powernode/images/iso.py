"""The ISO: boots the kernel and our RAM-boot initramfs (the whole node in RAM).

amd64: hybrid BIOS (El Torito with GRUB's i386-pc core, and an MBR for USB sticks) and UEFI (an
El Torito EFI image that is also a GPT/MBR partition); arm64: UEFI only. The layout is the one
`grub-mkrescue` makes, built here with `grub-mkimage` and `xorriso` directly, because
grub-mkrescue's memdisk and copied modules carry the build time and so never reproduce.

Reproducibility: every file date is `source_date_epoch` (`-volume_date all_file_dates`), the
volume dates and the GPT GUID come from SOURCE_DATE_EPOCH, and the GRUB images and the FAT
image are deterministic; the same inputs give a byte-identical `node.iso`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from powernode.images.disk import grub_config, grub_efi_image, make_vfat
from powernode.images.spec import BootInputs, Format, FormatResult
from powernode.images.tools import built_file, grub_platform_dir, run

MIB = 1 << 20
VOLUME_ID = "PN_NODE"
BIOS_MODULES = (
    "biosdisk",
    "iso9660",
    "part_msdos",
    "part_gpt",
    "linux",
    "search",
    "search_fs_uuid",
    "echo",
    "gzio",
    "normal",
)
"""Modules built into the BIOS El Torito core (amd64)."""
KERNEL = "/boot/vmlinuz"
INITRAMFS = "/boot/initramfs.img"


def build_iso(inputs: BootInputs, out_dir: Path, *, tools_cache: Path) -> FormatResult:
    """Write `node.iso` into `out_dir`: RAM-boots the kernel and our initramfs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = inputs.work_dir / "iso"
    staging = work / "tree"
    (staging / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    epoch = inputs.source_date_epoch
    stamp = dt.datetime.fromtimestamp(epoch, dt.UTC)
    # GRUB's UUID of an ISO 9660 file system is its modification date.
    fs_uuid = stamp.strftime("%Y-%m-%d-%H-%M-%S-00")
    config = grub_config(
        inputs,
        kernel=KERNEL,
        initrd=INITRAMFS,
        cmdline=inputs.cmdline,
        root=f"--fs-uuid {fs_uuid}",
    )
    (staging / "boot" / "grub" / "grub.cfg").write_text(config)
    efi = grub_efi_image(
        inputs.arch,
        config,
        work / inputs.arch.efi_boot_file,
        work,
        tools_cache=tools_cache,
        prefix="/boot/grub",
    )
    make_vfat(
        staging / "efi.img",
        4 * MIB,
        "PN-ISO-EFI",
        f"{epoch & 0xFFFFFFFF:08x}",
        {f"EFI/BOOT/{inputs.arch.efi_boot_file}": efi},
        epoch,
    )
    boot_args: list[str | Path] = []
    bios = inputs.arch.name == "amd64"
    if bios:
        pc_dir = grub_platform_dir("i386-pc", "grub-pc-bin", tools_cache)
        eltorito = staging / "boot" / "grub" / "i386-pc" / "eltorito.img"
        eltorito.parent.mkdir(exist_ok=True)
        cfg = work / "grub-bios.cfg"
        cfg.write_text(config)
        run(
            [
                "grub-mkimage",
                "-O",
                "i386-pc-eltorito",
                "-d",
                pc_dir,
                "-p",
                "/boot/grub",
                "-c",
                cfg,
                "-o",
                eltorito,
                *BIOS_MODULES,
            ],
            what="building the GRUB BIOS El Torito image",
        )
        boot_args += [
            "-b",
            "boot/grub/i386-pc/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "--grub2-mbr",
            pc_dir / "boot_hybrid.img",
        ]
    boot_args += ["--efi-boot", "efi.img", "-efi-boot-part", "--efi-boot-image"]
    for path in sorted(staging.rglob("*"), reverse=True):
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    iso = out_dir / "node.iso"
    iso.unlink(missing_ok=True)
    run(
        [
            "xorriso",
            "-report_about",
            "SORRY",
            "-volume_date",
            "all_file_dates",
            f"={epoch}",
            "-as",
            "mkisofs",
            "-o",
            iso,
            "-r",
            "-V",
            VOLUME_ID,
            f"--modification-date={stamp.strftime('%Y%m%d%H%M%S')}00",
            *boot_args,
            "--protective-msdos-label",
            "-graft-points",
            staging,
            f"{KERNEL.lstrip('/')}={inputs.vmlinuz}",
            f"{INITRAMFS.lstrip('/')}={inputs.initramfs}",
        ],
        what="writing the ISO (xorriso)",
        env={"SOURCE_DATE_EPOCH": str(epoch)},
    )
    return FormatResult(
        format=Format.ISO,
        files=(built_file(iso),),
        details={
            "kernel_version": inputs.kernel_version,
            "cmdline": inputs.cmdline,
            "volume_id": VOLUME_ID,
            "fs_uuid": fs_uuid,
            "boot": "BIOS + UEFI (hybrid)" if bios else "UEFI",
            "efi_boot_file": f"EFI/BOOT/{inputs.arch.efi_boot_file}",
        },
    )
