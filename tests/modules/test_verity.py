"""fs-verity digests computed in user space equal what the real `fsverity digest` prints."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from powernode.modules.verity import (
    BLOCK_SIZE,
    CHUNK_SIZE,
    fsverity_digest_bytes,
    fsverity_digest_file,
)

HASHES_PER_BLOCK = BLOCK_SIZE // 32
TWO_LEVEL_MAX = HASHES_PER_BLOCK * HASHES_PER_BLOCK * BLOCK_SIZE  # 64 MiB
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

needs_fsverity = pytest.mark.skipif(
    shutil.which("fsverity") is None, reason="fsverity-utils not installed (make setup)"
)

SIZES = [
    0,
    1,
    BLOCK_SIZE - 1,
    BLOCK_SIZE,
    BLOCK_SIZE + 1,
    HASHES_PER_BLOCK * BLOCK_SIZE,
    HASHES_PER_BLOCK * BLOCK_SIZE + 1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    3 * 1024 * 1024 + 5,
]


def random_bytes(size: int, *, seed: int | None = None) -> bytes:
    """Reproducible test data: the same size gives the same bytes unless `seed` says otherwise."""
    rng = random.Random(size if seed is None else seed)  # noqa: S311 - test data, not secrets
    return rng.randbytes(size)


def write_file(directory: Path, size: int, *, sparse: bool = False) -> Path:
    """A file of `size` bytes: random, or (sparse) zeros with a few random bytes scattered in."""
    path = directory / f"data-{size}.bin"
    if not sparse:
        path.write_bytes(random_bytes(size))
        return path
    with path.open("wb") as file:
        file.truncate(size)
        for offset in (0, BLOCK_SIZE * 7 + 3, size // 2, size - 100):
            file.seek(offset)
            file.write(random_bytes(min(100, size - offset), seed=offset))
    return path


def fsverity_tool_digest(path: Path) -> str:
    """The digest the real `fsverity digest` prints for `path`."""
    proc = subprocess.run(
        ["fsverity", "digest", str(path)], capture_output=True, text=True, check=True
    )
    digest, printed_path = proc.stdout.strip().split(" ", 1)
    assert printed_path == str(path)
    assert DIGEST.fullmatch(digest), proc.stdout
    return digest


@needs_fsverity
@pytest.mark.parametrize("size", SIZES)
def test_file_digest_matches_the_fsverity_tool(tmp_path: Path, size: int) -> None:
    """A file's digest is byte-identical to `fsverity digest` at every block and level edge."""
    path = write_file(tmp_path, size)
    assert fsverity_digest_file(path) == fsverity_tool_digest(path)


@needs_fsverity
@pytest.mark.parametrize("size", [TWO_LEVEL_MAX, TWO_LEVEL_MAX + 1, TWO_LEVEL_MAX + 5 * BLOCK_SIZE])
def test_file_digest_matches_the_tool_around_the_third_tree_level(
    tmp_path: Path, size: int
) -> None:
    """Files of more than 128*128 blocks (a three-level tree) digest as the tool does."""
    path = write_file(tmp_path, size, sparse=True)
    assert fsverity_digest_file(path) == fsverity_tool_digest(path)


@pytest.mark.parametrize("size", [*SIZES, TWO_LEVEL_MAX + 1])
def test_bytes_digest_equals_file_digest(tmp_path: Path, size: int) -> None:
    """Digesting the bytes in memory gives the same digest as streaming the file."""
    path = write_file(tmp_path, size, sparse=size > CHUNK_SIZE * 8)
    assert fsverity_digest_bytes(path.read_bytes()) == fsverity_digest_file(path)


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95"),
        (b"abc", "700b6bd8510f0b4f9bac8b9cf0459151a1c4a99f467892bb4bd289a67df8e19c"),
        (bytes(BLOCK_SIZE), "babc284ee4ffe7f449377fbf6692715b43aec7bc39c094a95878904d34bac97e"),
    ],
)
def test_known_digests_hold_without_the_tool(data: bytes, digest: str) -> None:
    """Digests recorded from fsverity-utils 1.5 hold where the tool is not installed."""
    assert fsverity_digest_bytes(data) == f"sha256:{digest}"


def test_file_digest_is_the_same_when_reads_come_back_short(tmp_path: Path) -> None:
    """A pipe fed in odd-sized pieces yields short reads, yet the digest is unchanged."""
    data = random_bytes(2 * CHUNK_SIZE + 12345)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb", buffering=0) as pipe:
            for start in range(0, len(data), 7777):
                pipe.write(data[start : start + 7777])

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        digest = fsverity_digest_file(fifo)
    finally:
        writer.join()
    assert digest == fsverity_digest_bytes(data)


def test_file_digest_accepts_a_str_path(tmp_path: Path) -> None:
    """A plain string path works as well as a `Path`."""
    path = write_file(tmp_path, 10)
    assert fsverity_digest_file(str(path)) == fsverity_digest_file(path)


def test_file_digest_of_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    """A missing file is the caller's `FileNotFoundError`, not a digest."""
    with pytest.raises(FileNotFoundError):
        fsverity_digest_file(tmp_path / "missing")
