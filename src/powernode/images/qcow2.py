"""The qcow2 image: the raw disk image converted by `qemu-img convert` (unallocated space is
left out, so it is as small as the data in it).

qcow2 holds no timestamps: the same `disk.raw` gives a byte-identical `disk.qcow2`.
"""

from __future__ import annotations

import json
from pathlib import Path

from powernode.errors import Invalid
from powernode.images.spec import Format, FormatResult
from powernode.images.tools import built_file, run

NAME = "disk.qcow2"


def build_qcow2(disk_raw: Path, out_dir: Path) -> FormatResult:
    """Write `disk.qcow2` into `out_dir` from the raw disk image `disk_raw`."""
    if not disk_raw.is_file():
        raise Invalid(f"{disk_raw} does not exist: the qcow2 image is made from the disk image")
    out_dir.mkdir(parents=True, exist_ok=True)
    image = out_dir / NAME
    image.unlink(missing_ok=True)
    run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", disk_raw, image],
        what="converting the disk image to qcow2 (qemu-img convert)",
    )
    info = json.loads(
        run(
            ["qemu-img", "info", "--output=json", "-f", "qcow2", image],
            what="reading the qcow2 image (qemu-img info)",
        ).stdout
    )
    return FormatResult(
        format=Format.QCOW2,
        files=(built_file(image),),
        details={"virtual_size": info.get("virtual-size"), "source": disk_raw.name},
    )
