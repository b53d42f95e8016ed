"""The iPXE script: the control plane's URL set once, files named by sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from powernode.errors import Invalid
from powernode.images.ipxe import build_ipxe, render_ipxe
from powernode.images.spec import Format
from tests.images.formats import INITRAMFS, KERNEL, boot_inputs


def test_script_sets_the_base_url_once_and_names_files_by_sha256(tmp_path: Path) -> None:
    """`set base-url` appears once; kernel and initrd lines use it with sha256 file paths."""
    inputs = boot_inputs(tmp_path)
    result = build_ipxe(inputs, tmp_path / "out", "https://cp.example:8080/")
    assert result.format is Format.IPXE
    script = result.files[0].path.read_text()
    kernel_sha = hashlib.sha256(KERNEL).hexdigest()
    initrd_sha = hashlib.sha256(INITRAMFS).hexdigest()
    assert script.splitlines() == [
        "#!ipxe",
        "",
        "# The control plane serving this node's boot files; change it here if needed.",
        "set base-url https://cp.example:8080",
        "",
        f"kernel ${{base-url}}/boot/v1/files/{kernel_sha}/vmlinuz initrd=initrd "
        "console=ttyS0 quiet",
        f"initrd --name initrd ${{base-url}}/boot/v1/files/{initrd_sha}/initramfs.cpio.zst",
        "boot",
    ]
    assert script.count("cp.example") == 1


def test_the_artifact_carries_the_files_the_script_boots(tmp_path: Path) -> None:
    """The files are the script, then the kernel and the initramfs with matching digests."""
    result = build_ipxe(boot_inputs(tmp_path), tmp_path / "out", "http://10.0.2.2:8080")
    names = [f.name for f in result.files]
    assert names == ["node.ipxe", "vmlinuz", "initramfs.cpio.zst"]
    assert result.files[1].sha256 == hashlib.sha256(KERNEL).hexdigest()
    assert result.files[2].path.read_bytes() == INITRAMFS
    assert result.details["kernel"] == f"/boot/v1/files/{result.files[1].sha256}/vmlinuz"


def test_absolute_urls_render_without_a_base_url() -> None:
    """Without a base URL the URLs are used as given."""
    script = render_ipxe("http://a/k", "http://a/i", "quiet")
    assert "set base-url" not in script
    assert (
        "kernel http://a/k initrd=initrd quiet\ninitrd --name initrd http://a/i\nboot\n" in script
    )


@pytest.mark.parametrize(
    "base_url", ["ftp://cp", "cp.example", "http://cp example", "http://${evil}"]
)
def test_a_base_url_that_is_not_http_is_refused(base_url: str) -> None:
    """Only http(s) URLs without spaces or iPXE variables are accepted."""
    with pytest.raises(Invalid):
        render_ipxe("/k", "/i", "", base_url=base_url)


def test_a_command_line_with_ipxe_variables_is_refused() -> None:
    """`${...}` in the command line would be expanded by iPXE: refused."""
    with pytest.raises(Invalid, match="command line"):
        render_ipxe("/k", "/i", "pn.x=${net0/mac}", base_url="http://cp")
