"""A file's sha256 and fs-verity digest, computed from its bytes as they are written.

Extraction hands every chunk it writes to `FileDigests.update`, so no file is read back to be
checked. The fs-verity digest is the one `powernode.modules.verity` computes from a whole file
(SHA-256, 4096-byte Merkle blocks, no salt, the v1 descriptor), built incrementally: level 0 is
the SHA-256 of each data block as the bytes arrive (a block cut between two chunks waits for
the rest), and each level above packs 128 hashes to a block. Memory: one partial block per
level.

hashlib releases the GIL for inputs over 2 KiB, so a 4 KiB block hash and a chunk's sha256 run
beside the other threads of an extraction.
"""

from __future__ import annotations

import hashlib
import struct

BLOCK_SIZE = 4096
_HASH_SIZE = 32
_DESCRIPTOR = struct.Struct("<BBBB4xQ64s32s144x")
_ZERO_BLOCK = bytes(BLOCK_SIZE)
_sha256 = hashlib.sha256


def _hash_blocks(view: memoryview) -> bytes:
    """The SHA-256 of each block of `view` (a whole number of blocks), concatenated."""
    return b"".join(
        [_sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]
    )


def _padded_hash(data: bytes | memoryview) -> bytes:
    """The SHA-256 of a last, partial block, zero-padded to a whole one."""
    digest = _sha256(data)
    digest.update(_ZERO_BLOCK[: BLOCK_SIZE - len(data)])
    return digest.digest()


class FileDigests:
    """sha256 and fs-verity digest of one file, fed its bytes in order, in any pieces."""

    __slots__ = ("_counts", "_partial", "_pending", "_sha", "size")

    def __init__(self) -> None:
        self._sha = _sha256()
        self._partial = b""  # the start of a data block not yet complete
        self._pending: list[bytes] = []  # per tree level: hashes not yet packed into a block
        self._counts: list[int] = []  # per tree level: hashes added in all
        self.size = 0

    def update(self, data: bytes) -> None:
        """The next bytes of the file."""
        if not data:
            return
        self._sha.update(data)
        self.size += len(data)
        view = memoryview(data)
        if self._partial:
            take = BLOCK_SIZE - len(self._partial)
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < BLOCK_SIZE:
                return
            self._add(_sha256(self._partial).digest(), 0)
            self._partial = b""
        full = len(view) - len(view) % BLOCK_SIZE
        if full:
            self._add(_hash_blocks(view[:full]), 0)
        if full < len(view):
            self._partial = bytes(view[full:])

    def hexdigests(self) -> tuple[str, str]:
        """(sha256 hex, fs-verity digest as `sha256:<hex>`); feed nothing more afterwards."""
        if self._partial:
            self._add(_padded_hash(self._partial), 0)
            self._partial = b""
        descriptor = _DESCRIPTOR.pack(1, 1, 12, 0, self.size, self._root(), b"")
        return self._sha.hexdigest(), "sha256:" + _sha256(descriptor).hexdigest()

    def _add(self, hashes: bytes, level: int) -> None:
        if level == len(self._pending):
            self._pending.append(b"")
            self._counts.append(0)
        self._counts[level] += len(hashes) // _HASH_SIZE
        pending = self._pending[level] + hashes
        full = len(pending) - len(pending) % BLOCK_SIZE
        self._pending[level] = pending[full:]
        if full:
            self._add(_hash_blocks(memoryview(pending)[:full]), level + 1)

    def _root(self) -> bytes:
        level = 0
        while level < len(self._counts) and self._counts[level]:
            if self._counts[level] == 1:
                return self._pending[level]  # a lone hash is never packed upwards
            if self._pending[level]:
                pending, self._pending[level] = self._pending[level], b""
                self._add(_padded_hash(pending), level + 1)
            level += 1
        return bytes(_HASH_SIZE)  # the empty file
