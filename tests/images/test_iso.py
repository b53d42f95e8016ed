"""The ISO, checked with xorriso: El Torito entries, the files it boots, reproducibility."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from powernode.images.iso import build_iso
from powernode.images.spec import BootInputs, Format, FormatResult
from tests.images.formats import INITRAMFS, KERNEL, TOOLS_CACHE, boot_inputs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BootInputs, FormatResult]:
    tmp = tmp_path_factory.mktemp("iso")
    inputs = boot_inputs(tmp)
    return inputs, build_iso(inputs, tmp / "out", tools_cache=TOOLS_CACHE)


def _xorriso(iso: Path, *commands: str) -> str:
    proc = subprocess.run(
        ["xorriso", "-indev", str(iso), *commands], capture_output=True, text=True, check=True
    )
    return proc.stdout + proc.stderr


def _extract(iso: Path, path: str, out: Path) -> bytes:
    _xorriso(iso, "-osirrox", "on", "-extract", path, str(out))
    return out.read_bytes()


def _el_torito(iso: Path) -> list[str]:
    report = _xorriso(iso, "-report_el_torito", "plain")
    return [line for line in report.splitlines() if line.startswith("El Torito boot img")]


def test_amd64_iso_boots_by_bios_and_uefi(built: tuple[BootInputs, FormatResult]) -> None:
    """Two El Torito entries (BIOS GRUB core, UEFI FAT image) and a hybrid MBR + GPT."""
    _, result = built
    assert result.format is Format.ISO
    assert result.files[0].name == "node.iso"
    iso = result.files[0].path
    toc = _xorriso(iso, "-toc")
    assert "Volume id    : 'PN_NODE'" in toc
    assert "El Torito" in toc
    assert "grub2-mbr" in toc
    assert "GPT" in toc
    entries = _el_torito(iso)
    assert len(entries) == 2
    assert " BIOS " in entries[0]
    assert " UEFI " in entries[1]
    report = _xorriso(iso, "-report_el_torito", "plain")
    assert "/boot/grub/i386-pc/eltorito.img" in report
    assert "/efi.img" in report
    assert result.details["boot"] == "BIOS + UEFI (hybrid)"


def test_iso_carries_the_kernel_and_our_initramfs(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """The ISO holds the kernel and the RAM-boot initramfs, and GRUB boots them with the
    RAM boot's command line (no root=)."""
    inputs, result = built
    iso = result.files[0].path
    assert _extract(iso, "/boot/vmlinuz", tmp_path / "k") == KERNEL
    assert _extract(iso, "/boot/initramfs.img", tmp_path / "i") == INITRAMFS
    config = _extract(iso, "/boot/grub/grub.cfg", tmp_path / "c").decode()
    assert f"--fs-uuid {result.details['fs_uuid']}" in config
    assert "linux /boot/vmlinuz 'console=ttyS0' 'quiet'" in config
    assert "initrd /boot/initramfs.img" in config
    assert "root=" not in config
    listing = _xorriso(iso, "-find", "/", "-exec", "lsdl")
    assert "Nov 14  2023" in listing  # every date is SOURCE_DATE_EPOCH
    assert inputs.cmdline == result.details["cmdline"]


def test_same_inputs_give_a_byte_identical_iso(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """A second build in another directory, later, gives the same bytes."""
    _, first = built
    again = build_iso(boot_inputs(tmp_path), tmp_path / "out", tools_cache=TOOLS_CACHE)
    assert again.files[0].sha256 == first.files[0].sha256


def test_arm64_iso_boots_by_uefi_only(tmp_path: Path) -> None:
    """arm64: one UEFI El Torito entry holding BOOTAA64.EFI, no BIOS core."""
    result = build_iso(
        boot_inputs(tmp_path, arch="arm64"), tmp_path / "out", tools_cache=TOOLS_CACHE
    )
    iso = result.files[0].path
    entries = _el_torito(iso)
    assert len(entries) == 1
    assert " UEFI " in entries[0]
    assert "eltorito.img" not in _xorriso(iso, "-find", "/", "-exec", "lsdl")
    assert result.details["efi_boot_file"] == "EFI/BOOT/BOOTAA64.EFI"
