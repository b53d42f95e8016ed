"""Dispatch from a format to its writer (the initramfs is written by build.py itself, first:
the ISO, the iPXE script and the bootc image carry it; the qcow2 image converts the disk)."""

from __future__ import annotations

from pathlib import Path

from powernode.errors import Invalid
from powernode.images.bootc import build_bootc
from powernode.images.disk import build_disk
from powernode.images.ipxe import build_ipxe
from powernode.images.iso import build_iso
from powernode.images.qcow2 import build_qcow2
from powernode.images.spec import BootInputs, Format, FormatResult


def run(
    fmt: Format,
    inputs: BootInputs,
    directory: Path,
    base_url: str,
    cache_dir: Path,
    results: dict[Format, FormatResult],
) -> FormatResult:
    tools_cache = cache_dir / "tools"
    if fmt == Format.DISK:
        return build_disk(inputs, directory, tools_cache=tools_cache)
    if fmt == Format.QCOW2:
        return build_qcow2(results[Format.DISK].files[0].path, directory)
    if fmt == Format.ISO:
        return build_iso(inputs, directory, tools_cache=tools_cache)
    if fmt == Format.IPXE:
        return build_ipxe(inputs, directory, base_url)
    if fmt == Format.BOOTC:
        return build_bootc(inputs, directory)
    raise Invalid(f"format {fmt.value} has no writer")
