"""Extraction's own parts: digests computed from the bytes written, and a tree that is the
same whenever the same layer is extracted."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from powernode.agent.modules.digests import FileDigests
from powernode.agent.modules.extract import LayerLimits, extract_layer
from powernode.artifacts.layer import LayerError
from powernode.modules.verity import fsverity_digest_bytes
from tests.agent.modules.factories import MTIME, evil_layer, member

SIZES = [0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, 129 * 4096, (128 * 128 + 3) * 4096]


def limits_for(layer: bytes) -> LayerLimits:
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    return LayerLimits(1 << 30, 1 << 30, None, expected_size=len(layer), expected_digest=digest)


@pytest.mark.parametrize("size", SIZES)
def test_digests_fed_in_any_pieces_are_the_whole_files(size: int) -> None:
    """sha256 and the fs-verity digest match the whole-file computations, however cut."""
    rng = random.Random(size)  # noqa: S311 - test data and cut points, no secret
    data = rng.randbytes(size)
    digests = FileDigests()
    offset = 0
    while offset < size:
        step = rng.choice([1, 100, 4095, 4096, 5000, 1 << 20])
        digests.update(data[offset : offset + step])
        offset += step

    assert digests.size == size
    assert digests.hexdigests() == (hashlib.sha256(data).hexdigest(), fsverity_digest_bytes(data))


def test_the_fs_verity_digest_is_the_one_fsverity_utils_computes(tmp_path: Path) -> None:
    """Against `fsverity digest` (fsverity-utils), the reference outside this code base."""
    tool = shutil.which("fsverity")
    assert tool is not None, "fsverity is not installed: `make setup` installs it"
    data = os.urandom(3 * (128 * 4096) + 17)
    (tmp_path / "file").write_bytes(data)
    digests = FileDigests()
    digests.update(data)

    said = subprocess.run(
        [tool, "digest", str(tmp_path / "file")], capture_output=True, text=True, check=True
    ).stdout.split()[0]

    assert digests.hexdigests()[1] == said


def test_the_same_layer_makes_the_same_tree_implicit_directories_included(
    tmp_path: Path,
) -> None:
    """Directories the layer leaves implicit, and the tree itself, get the layer's newest
    mtime; files their own, with their digests in the entries."""
    newest = member("a/b/new", data=b"new\n")
    newest[0].mtime = MTIME + 50
    layer = evil_layer([member("a/b/c", data=b"c\n"), newest])

    trees = []
    for name in ("one", "two"):
        entries = extract_layer(io.BytesIO(layer), tmp_path / name, limits_for(layer))
        tree = tmp_path / name
        trees.append(
            {
                path: (int(os.lstat(tree / path).st_mtime), (tree / path).is_dir())
                for path in (".", "a", "a/b", "a/b/c", "a/b/new")
            }
        )

    assert trees[0] == trees[1]
    assert trees[0]["."][0] == trees[0]["a"][0] == trees[0]["a/b"][0] == MTIME + 50
    assert trees[0]["a/b/c"][0] == MTIME
    assert [(e["path"], e["sha256"]) for e in entries] == [
        ("a/b/c", hashlib.sha256(b"c\n").hexdigest()),
        ("a/b/new", hashlib.sha256(b"new\n").hexdigest()),
    ]


def test_a_refusal_at_the_end_of_the_stream_comes_after_the_writer_stopped(
    tmp_path: Path,
) -> None:
    """A layer whose digest is not the declared one is refused once read whole (files were
    written meanwhile); the writer thread has finished by then."""
    layer = evil_layer([member(f"f{i}", data=os.urandom(100_000)) for i in range(50)])
    wrong = LayerLimits(1 << 30, 1 << 30, None, len(layer), "sha256:" + "0" * 64)

    with pytest.raises(LayerError, match="the layer's digest is"):
        extract_layer(io.BytesIO(layer), tmp_path / "tree", wrong)

    assert list((tmp_path / "tree").iterdir())
    assert [t for t in threading.enumerate() if t.name == "module-extract"] == []
