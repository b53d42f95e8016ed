"""Our newc writer against GNU cpio: what `cpio -t` lists and `cpio -i` extracts."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from powernode.images.cpio import CpioWriter

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")


def _archive() -> bytes:
    out = io.BytesIO()
    writer = CpioWriter(out)
    owner = {"uid": 0, "gid": 0, "mtime": 1_700_000_000}
    writer.directory("etc", 0o755, **owner)
    writer.file("etc/hostname", 0o644, 5, iter([b"node\n"]), **owner)
    writer.file("etc/empty", 0o600, 0, iter([]), **owner)
    writer.directory("usr", 0o755, **owner)
    writer.directory("usr/bin", 0o755, **owner)
    data = bytes(range(256)) * 41 + b"odd"  # not a multiple of 4: padding matters
    writer.file("usr/bin/tool", 0o4755, len(data), iter([data[:1000], data[1000:]]), **owner)
    writer.symlink("usr/bin/alias", "tool", **owner)
    writer.symlink("init", "usr/bin/tool", **owner)
    writer.device("console", stat.S_IFCHR, 0o600, (5, 1), **owner)
    writer.close()
    return out.getvalue()


def test_gnu_cpio_lists_every_entry_with_its_type_and_mode(tmp_path: Path) -> None:
    listing = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"], input=_archive(), capture_output=True, check=True
    ).stdout.decode()
    rows = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line.split()[0]
        for line in listing.splitlines()
    }
    assert rows == {
        "etc": "drwxr-xr-x",
        "etc/hostname": "-rw-r--r--",
        "etc/empty": "-rw-------",
        "usr": "drwxr-xr-x",
        "usr/bin": "drwxr-xr-x",
        "usr/bin/tool": "-rwsr-xr-x",
        "usr/bin/alias": "lrwxrwxrwx",
        "init": "lrwxrwxrwx",
        "console": "crw-------",
    }
    assert "5,   1" in listing or "5, 1" in listing


def test_gnu_cpio_extracts_the_same_bytes(tmp_path: Path) -> None:
    subprocess.run(
        [
            "cpio",
            "-i",
            "-d",
            "-m",
            "--quiet",
            "--no-absolute-filenames",
            "--nonmatching",
            "console",
        ],
        input=_archive(),
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "etc/hostname").read_bytes() == b"node\n"
    assert (tmp_path / "etc/empty").read_bytes() == b""
    data = bytes(range(256)) * 41 + b"odd"
    assert (tmp_path / "usr/bin/tool").read_bytes() == data
    assert os.readlink(tmp_path / "usr/bin/alias") == "tool"
    assert (tmp_path / "usr/bin/tool").stat().st_mtime == 1_700_000_000


def test_output_is_deterministic_and_padded() -> None:
    first, second = _archive(), _archive()
    assert first == second
    assert len(first) % 4 == 0
    assert first.startswith(b"070701")
    assert b"TRAILER!!!\0" in first[-128:]


def test_a_file_shorter_than_announced_is_refused() -> None:
    writer = CpioWriter(io.BytesIO())
    with pytest.raises(ValueError, match="expected 10 bytes, got 3"):
        writer.file("f", 0o644, 10, iter([b"abc"]), uid=0, gid=0, mtime=0)
