"""fs-verity file digests computed in user space.

The digest is byte-identical to `fsverity digest FILE` and to what the Linux kernel reports
(FS_IOC_MEASURE_VERITY) for a file with fs-verity enabled using the v1 descriptor, SHA-256,
4096-byte Merkle tree blocks and no salt. See the kernel's
Documentation/filesystems/fsverity.rst.

The Merkle tree: level 0 is the file's data split into 4096-byte blocks, the last one
zero-padded; each level above holds the SHA-256 hashes of the blocks below, packed 128 to a
block, its last block zero-padded. The root hash is the hash of the single block at the top;
for a file of one block or less that is the hash of the (padded) data block, and for an empty
file it is all zeros. The file digest is SHA-256 of the 256-byte descriptor:

    version u8 = 1, hash_algorithm u8 = 1, log_blocksize u8 = 12, salt_size u8 = 0,
    reserved 4 bytes, data_size le64, root_hash 64 bytes (zero-padded), salt 32 bytes,
    reserved 144 bytes

Memory: `fsverity_digest_file` reads into one reusable buffer of `CHUNK_SIZE` bytes and keeps
at most one partial tree block per level (a 1 TiB file has 4 levels), so its memory does not
grow with the file. Both functions are pure and safe to call from several threads at once.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence

__all__ = [
    "BLOCK_SIZE",
    "CHUNK_SIZE",
    "MerkleTree",
    "file_digest",
    "fsverity_digest_bytes",
    "fsverity_digest_file",
    "hash_blocks",
]

BLOCK_SIZE = 4096
"""Merkle tree block size in bytes (log_blocksize 12), the `fsverity` and kernel default."""

CHUNK_SIZE = 1 << 20
"""Bytes read per `readinto` call; a multiple of `BLOCK_SIZE`, small enough to stay in cache."""

_HASH_SIZE = 32
_FS_VERITY_HASH_ALG_SHA256 = 1
_DESCRIPTOR = struct.Struct("<BBBB4xQ64s32s144x")
_ZERO_BLOCK = bytes(BLOCK_SIZE)
_EMPTY_ROOT = bytes(_HASH_SIZE)
_PREFIX = "sha256:"

# Bound once: the per-block loops call it ~262,000 times per GiB.
_sha256 = hashlib.sha256


def hash_blocks(view: memoryview | bytes) -> bytes:
    """The concatenated SHA-256 of each `BLOCK_SIZE` block of `view`, the last zero-padded."""
    sha256 = _sha256
    size = len(view)
    full = size - size % BLOCK_SIZE
    digests = [sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, full, BLOCK_SIZE)]
    if full < size:
        last = sha256(view[full:])
        last.update(_ZERO_BLOCK[: BLOCK_SIZE - (size - full)])
        digests.append(last.digest())
    return b"".join(digests)


def _hash_views(views: Sequence[memoryview]) -> bytes:
    """The concatenated SHA-256 of each full block in `views` (the hot loop, no slicing)."""
    return b"".join([h.digest() for h in map(_sha256, views)])


class MerkleTree:
    """The tree levels above the data, built as the data's block hashes arrive (also used
    by the agent, which hashes files while it writes them: agent/modules/digests.py).

    `_pending[k]` holds the hashes (of level-k blocks) not yet packed into a full level-k+1
    block, so it is always shorter than one block; `_counts[k]` is how many level-k block
    hashes arrived in total, which decides where the tree ends.
    """

    __slots__ = ("_counts", "_pending")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._counts: list[int] = []

    def add(self, hashes: bytes, level: int = 0) -> None:
        """Append the hashes of consecutive level-`level` blocks (level 0 is the data)."""
        if level == len(self._pending):
            self._pending.append(b"")
            self._counts.append(0)
        self._counts[level] += len(hashes) // _HASH_SIZE
        pending = self._pending[level] + hashes
        full = len(pending) - len(pending) % BLOCK_SIZE
        self._pending[level] = pending[full:]
        if full:
            self.add(hash_blocks(memoryview(pending)[:full]), level + 1)

    def root(self) -> bytes:
        """The root hash; the tree must not be added to afterwards."""
        level = 0
        while level < len(self._counts) and self._counts[level]:
            if self._counts[level] == 1:
                # A lone hash was never packed upwards (that takes a full block of them).
                return self._pending[level]
            if self._pending[level]:
                pending, self._pending[level] = self._pending[level], b""
                self.add(hash_blocks(pending), level + 1)
            level += 1
        return _EMPTY_ROOT


def file_digest(data_size: int, root_hash: bytes) -> str:
    descriptor = _DESCRIPTOR.pack(
        1, _FS_VERITY_HASH_ALG_SHA256, BLOCK_SIZE.bit_length() - 1, 0, data_size, root_hash, b""
    )
    return _PREFIX + hashlib.sha256(descriptor).hexdigest()


def fsverity_digest_bytes(data: bytes) -> str:
    """The fs-verity digest of `data` as `sha256:<64 hex>`, as `fsverity digest` prints it."""
    tree = MerkleTree()
    with memoryview(data) as view:
        for start in range(0, len(view), CHUNK_SIZE):
            tree.add(hash_blocks(view[start : start + CHUNK_SIZE]))
    return file_digest(len(data), tree.root())


def fsverity_digest_file(path: str | os.PathLike[str]) -> str:
    """The fs-verity digest of the file at `path`, streamed; raises `OSError` if unreadable."""
    buffer = bytearray(CHUNK_SIZE)
    tree = MerkleTree()
    data_size = 0
    with open(path, "rb", buffering=0) as file, memoryview(buffer) as view:
        blocks = [view[i : i + BLOCK_SIZE] for i in range(0, CHUNK_SIZE, BLOCK_SIZE)]
        while True:
            # Fill the whole buffer so that only the last chunk can end in a partial block.
            got = 0
            while got < CHUNK_SIZE:
                n = file.readinto(view[got:])
                if not n:
                    break
                got += n
            data_size += got
            if got == CHUNK_SIZE:
                tree.add(_hash_views(blocks))
                continue
            if got:
                tree.add(hash_blocks(view[:got]))
            break
    return file_digest(data_size, tree.root())
