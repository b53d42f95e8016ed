"""The qcow2 image, checked with qemu-img: consistent, same contents as the raw image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from powernode.errors import Invalid
from powernode.images.disk import build_disk
from powernode.images.qcow2 import build_qcow2
from powernode.images.spec import Format
from tests.images.formats import TOOLS_CACHE, boot_inputs


@pytest.fixture(scope="module")
def disk_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("qcow2")
    result = build_disk(boot_inputs(tmp), tmp / "disk", tools_cache=TOOLS_CACHE, root_free_bytes=0)
    return result.files[0].path


def _qemu_img(*argv: str | Path) -> str:
    return subprocess.run(
        ["qemu-img", *map(str, argv)], capture_output=True, text=True, check=True
    ).stdout


def test_qcow2_is_consistent_and_holds_the_disk_image(disk_raw: Path, tmp_path: Path) -> None:
    """qemu-img check finds no errors, info says qcow2 of the raw size, compare finds no
    difference."""
    result = build_qcow2(disk_raw, tmp_path)
    assert result.format is Format.QCOW2
    image = result.files[0].path
    assert image.name == "disk.qcow2"
    _qemu_img("check", "-f", "qcow2", image)
    info = json.loads(_qemu_img("info", "--output=json", image))
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == disk_raw.stat().st_size == result.details["virtual_size"]
    assert "Images are identical" in _qemu_img(
        "compare", "-f", "raw", "-F", "qcow2", disk_raw, image
    )
    assert result.files[0].size < disk_raw.stat().st_size


def test_the_same_disk_gives_a_byte_identical_qcow2(disk_raw: Path, tmp_path: Path) -> None:
    """Two conversions of one raw image are the same bytes."""
    first = build_qcow2(disk_raw, tmp_path / "a")
    second = build_qcow2(disk_raw, tmp_path / "b")
    assert first.files[0].sha256 == second.files[0].sha256


def test_a_missing_disk_image_is_refused(tmp_path: Path) -> None:
    """Without the raw image there is nothing to convert: Invalid, naming the path."""
    with pytest.raises(Invalid, match=r"disk\.raw"):
        build_qcow2(tmp_path / "disk.raw", tmp_path)
