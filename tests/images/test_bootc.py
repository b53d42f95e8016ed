"""The bootc OCI layout, checked with skopeo and by reading its one layer."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from powernode.images.bootc import build_bootc
from powernode.images.spec import BootInputs, Format, FormatResult
from tests.images.formats import INITRAMFS, KERNEL, KVER, boot_inputs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BootInputs, FormatResult]:
    tmp = tmp_path_factory.mktemp("bootc")
    inputs = boot_inputs(tmp)
    return inputs, build_bootc(inputs, tmp / "out")


def _skopeo(*argv: str) -> str:
    return subprocess.run(["skopeo", *argv], capture_output=True, text=True, check=True).stdout


def _ref(result: FormatResult) -> str:
    layout = result.files[-1].path.parent
    return f"oci:{layout}:latest"


def _layer(result: FormatResult) -> dict[str, tarfile.TarInfo | bytes]:
    """name -> member, and name + '#data' -> bytes, for the one layer."""
    manifest = json.loads(_skopeo("inspect", "--raw", _ref(result)))
    (layer,) = manifest["layers"]
    blob = result.files[-1].path.parent / "blobs" / "sha256" / layer["digest"].split(":")[1]
    data = blob.read_bytes()
    if layer["mediaType"].endswith("+zstd"):
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    else:
        import gzip

        data = gzip.decompress(data)
    found: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            found[member.name] = member
            if member.isreg():
                extracted = tar.extractfile(member)
                assert extracted is not None
                found[member.name + "#data"] = extracted.read()
    return found


def test_layout_manifest_and_config_carry_the_bootc_labels(
    built: tuple[BootInputs, FormatResult],
) -> None:
    """skopeo reads the layout; the config has the bootc labels, arch, os and created."""
    _, result = built
    assert result.format is Format.BOOTC
    manifest_raw = _skopeo("inspect", "--raw", _ref(result))
    manifest = json.loads(manifest_raw)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert result.files[0].path.read_text() == manifest_raw
    assert result.digest == "sha256:" + result.files[0].sha256
    config = json.loads(_skopeo("inspect", "--config", _ref(result)))
    assert config["config"]["Labels"] == {"containers.bootc": "1", "ostree.bootable": "1"}
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["created"] == "2023-11-14T22:13:20Z"
    summary = json.loads(_skopeo("inspect", _ref(result)))
    assert summary["Digest"] == result.digest
    assert summary["Labels"]["containers.bootc"] == "1"


def test_layer_moves_kernel_and_initramfs_to_usr_lib_modules(
    built: tuple[BootInputs, FormatResult],
) -> None:
    """The kernel and our initramfs are under /usr/lib/modules/<kver>/; /boot is empty;
    /sysroot and the /ostree link are there; the tree's other files are kept."""
    _, result = built
    layer = _layer(result)
    assert layer[f"usr/lib/modules/{KVER}/vmlinuz#data"] == KERNEL
    assert layer[f"usr/lib/modules/{KVER}/initramfs.img#data"] == INITRAMFS
    assert f"usr/lib/modules/{KVER}/modules.dep" in layer
    boot = layer["boot"]
    assert isinstance(boot, tarfile.TarInfo)
    assert boot.isdir()
    assert not [name for name in layer if name.startswith("boot/")]
    assert "vmlinuz" not in layer  # Debian's top-level link into /boot
    sysroot, ostree = layer["sysroot"], layer["ostree"]
    assert isinstance(sysroot, tarfile.TarInfo)
    assert sysroot.isdir()
    assert isinstance(ostree, tarfile.TarInfo)
    assert ostree.linkname == "sysroot/ostree"
    shadow = layer["etc/shadow"]
    assert isinstance(shadow, tarfile.TarInfo)
    assert (shadow.mode, shadow.uid, shadow.gid, shadow.uname) == (0o640, 0, 42, "")
    ping = layer["usr/bin/ping"]
    assert isinstance(ping, tarfile.TarInfo)
    assert ping.pax_headers.get("SCHILY.xattr.user.powernode") == "test"
    assert "" not in layer
    assert "./" not in layer


def test_same_inputs_give_the_same_manifest_digest(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """A second build in another directory gives the same manifest digest; skopeo copies
    it (verifying every blob) to a new layout under the same digest."""
    _, first = built
    again = build_bootc(boot_inputs(tmp_path), tmp_path / "out")
    assert again.digest == first.digest
    copy = tmp_path / "copy"
    _skopeo("copy", "--quiet", _ref(first), f"oci:{copy}:latest")
    assert json.loads(_skopeo("inspect", f"oci:{copy}:latest"))["Digest"] == first.digest


def test_gzip_layers_are_offered_too(tmp_path: Path) -> None:
    """compression='gzip' gives a tar+gzip layer, also reproducible."""
    first = build_bootc(boot_inputs(tmp_path / "a"), tmp_path / "a" / "out", compression="gzip")
    second = build_bootc(boot_inputs(tmp_path / "b"), tmp_path / "b" / "out", compression="gzip")
    assert first.digest == second.digest
    assert first.details["layer_media_type"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert _layer(first)[f"usr/lib/modules/{KVER}/vmlinuz#data"] == KERNEL
