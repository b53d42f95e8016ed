"""A file's sha256 and fs-verity digest, computed from its bytes as they are written.

Extraction hands every chunk it writes to `FileDigests.update`, so no file is read back to be
checked. The fs-verity digest is the one `powernode.modules.verity` computes from a whole file
(SHA-256, 4096-byte Merkle blocks, no salt, the v1 descriptor), built incrementally: level 0 is
the SHA-256 of each data block as the bytes arrive (a block cut between two chunks waits for
the rest), and the tree above it is `powernode.modules.verity.MerkleTree`. Memory: one
partial block per level.

hashlib releases the GIL for inputs over 2 KiB, so a 4 KiB block hash and a chunk's sha256 run
beside the other threads of an extraction.
"""

from __future__ import annotations

import hashlib

from powernode.modules.verity import BLOCK_SIZE, MerkleTree, file_digest, hash_blocks

_sha256 = hashlib.sha256


class FileDigests:
    """sha256 and fs-verity digest of one file, fed its bytes in order, in any pieces."""

    __slots__ = ("_partial", "_sha", "_tree", "size")

    def __init__(self) -> None:
        self._sha = _sha256()
        self._partial = b""  # the start of a data block not yet complete
        self._tree = MerkleTree()
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
            self._tree.add(_sha256(self._partial).digest())
            self._partial = b""
        full = len(view) - len(view) % BLOCK_SIZE
        if full:
            self._tree.add(hash_blocks(view[:full]))
        if full < len(view):
            self._partial = bytes(view[full:])

    def hexdigests(self) -> tuple[str, str]:
        """(sha256 hex, fs-verity digest as `sha256:<hex>`); feed nothing more afterwards."""
        if self._partial:
            self._tree.add(hash_blocks(self._partial))  # the last block, zero-padded
            self._partial = b""
        return self._sha.hexdigest(), file_digest(self.size, self._tree.root())
