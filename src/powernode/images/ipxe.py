"""The iPXE script: chainloads the kernel and our RAM-boot initramfs over HTTP(S) from the
control plane, which serves registered artifact files at `/boot/v1/files/{sha256}/{name}`.

The control plane's URL is set once at the top (`set base-url ...`), so an operator can point
the script at another address by editing one line; files are named by their sha256, so a
script always boots exactly the kernel and initramfs it was built with.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from powernode.errors import Invalid
from powernode.images.spec import BootInputs, Format, FormatResult
from powernode.images.tools import built_file, file_sha256

NAME = "node.ipxe"
FILES_PATH = "/boot/v1/files"
"""Where the control plane serves registered artifact files: `{FILES_PATH}/{sha256}/{name}`."""
INITRD_NAME = "initrd"
"""The name the initramfs gets inside iPXE; the kernel's `initrd=` names it for EFI stubs."""


def file_path(sha256: str, name: str) -> str:
    """The control plane path of a registered artifact file."""
    return f"{FILES_PATH}/{sha256}/{name}"


def render_ipxe(
    kernel_url: str, initrd_url: str, cmdline: str, *, base_url: str | None = None
) -> str:
    """An iPXE script booting `kernel_url` with `initrd_url` and `cmdline`.

    With `base_url`, the two URLs are paths under it (`/boot/v1/...`) and the script sets
    `base-url` once and refers to it; without, they are used as they are.
    """
    for what, value in (("kernel URL", kernel_url), ("initrd URL", initrd_url)):
        if not value or any(c.isspace() for c in value) or "${" in value:
            raise Invalid(f"{what} {value!r} must be non-empty, without spaces or ${{...}}")
    if "\n" in cmdline or "${" in cmdline:
        raise Invalid("the kernel command line must be one line without iPXE ${...} variables")
    lines = ["#!ipxe", ""]
    if base_url is not None:
        base = _check_base_url(base_url)
        lines += [
            "# The control plane serving this node's boot files; change it here if needed.",
            f"set base-url {base}",
            "",
        ]
        kernel_url, initrd_url = (
            f"${{base-url}}/{url.lstrip('/')}" for url in (kernel_url, initrd_url)
        )
    args = " ".join([f"initrd={INITRD_NAME}", *cmdline.split()])
    lines += [
        f"kernel {kernel_url} {args}",
        f"initrd --name {INITRD_NAME} {initrd_url}",
        "boot",
        "",
    ]
    return "\n".join(lines)


def _check_base_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if not base.startswith(("http://", "https://")) or any(c.isspace() for c in base):
        raise Invalid(f"base URL {base_url!r} must be an http:// or https:// URL without spaces")
    if "${" in base:
        raise Invalid(f"base URL {base_url!r} must not hold iPXE variables")
    return base


def build_ipxe(inputs: BootInputs, out_dir: Path, base_url: str) -> FormatResult:
    """Write `node.ipxe` into `out_dir`, with the kernel and initramfs it names beside it.

    The script's files are `node.ipxe`, then the kernel and the initramfs under their own
    names (hard links where possible), so registering this artifact registers what it boots.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel_sha = file_sha256(inputs.vmlinuz)
    initrd_sha = file_sha256(inputs.initramfs)
    script = render_ipxe(
        file_path(kernel_sha, inputs.vmlinuz.name),
        file_path(initrd_sha, inputs.initramfs.name),
        inputs.cmdline,
        base_url=base_url,
    )
    path = out_dir / NAME
    path.write_text(script)
    kernel = _place(inputs.vmlinuz, out_dir)
    initramfs = _place(inputs.initramfs, out_dir)
    return FormatResult(
        format=Format.IPXE,
        files=(built_file(path), built_file(kernel), built_file(initramfs)),
        details={
            "base_url": _check_base_url(base_url),
            "kernel": file_path(kernel_sha, inputs.vmlinuz.name),
            "initramfs": file_path(initrd_sha, inputs.initramfs.name),
            "cmdline": inputs.cmdline,
            "kernel_version": inputs.kernel_version,
        },
    )


def _place(source: Path, out_dir: Path) -> Path:
    """`source` in `out_dir` under its own name: a hard link, else a copy."""
    target = out_dir / source.name
    if target.resolve() == source.resolve():
        return target
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target
