"""Turning fs-verity on for verified files (FS_IOC_ENABLE_VERITY), and reading it back.

Once enabled, a file is read-only for good and the kernel checks every page it reads against
the Merkle tree, so a tree cannot be altered under an active generation without reads failing.
Parameters match `powernode.modules.verity` (SHA-256, 4096-byte blocks, no salt), so the
digest the kernel measures (FS_IOC_MEASURE_VERITY) must equal the one computed in user space.

Filesystems without fs-verity (ext4 without the `verity` feature, tmpfs, overlayfs, most
kernels' defaults) answer EOPNOTSUPP, ENOTTY or EINVAL: `probe` reports them as unsupported.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

FS_IOC_ENABLE_VERITY = 0x40806685
"""_IOW('f', 133, struct fsverity_enable_arg) (128 bytes)."""
FS_IOC_MEASURE_VERITY = 0xC0046686
"""_IOWR('f', 134, struct fsverity_digest) (4 bytes and the digest after them)."""
_ENABLE_ARG = struct.Struct("<IIIIQIIQ88x")
_DIGEST_HEAD = struct.Struct("<HH")
_SHA256, _BLOCK_SIZE, _MAX_DIGEST = 1, 4096, 64
_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS})


class VerityError(Exception):
    """fs-verity could not be enabled or measured; `unsupported` when the filesystem lacks it."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def probe(directory: Path) -> VerityError | None:
    """None if files in `directory` can get fs-verity, else why not (tried on a probe file)."""
    probe_file = directory / ".verity-probe"
    probe_file.write_bytes(b"powernode fs-verity probe\n")
    try:
        enable(probe_file)
    except VerityError as exc:
        return exc
    finally:
        probe_file.unlink(missing_ok=True)
    return None


def enable(path: Path) -> None:
    """Enable fs-verity on the regular file `path` (already enabled is fine)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        arg = _ENABLE_ARG.pack(1, _SHA256, _BLOCK_SIZE, 0, 0, 0, 0, 0)
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, arg)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return
        unsupported = exc.errno in _UNSUPPORTED
        kind = "not supported" if unsupported else "failed"
        raise VerityError(
            f"fs-verity {kind} on {path}: {os.strerror(exc.errno or 0)}", unsupported=unsupported
        ) from exc
    finally:
        os.close(fd)


def measure(path: Path) -> str:
    """The kernel's fs-verity digest of `path` (`sha256:<hex>`); VerityError if it has none."""
    buffer = bytearray(_DIGEST_HEAD.pack(0, _MAX_DIGEST) + bytes(_MAX_DIGEST))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FS_IOC_MEASURE_VERITY, buffer, True)
    except OSError as exc:
        raise VerityError(f"cannot measure {path}: {os.strerror(exc.errno or 0)}") from exc
    finally:
        os.close(fd)
    algorithm, size = _DIGEST_HEAD.unpack_from(buffer)
    if algorithm != _SHA256:
        raise VerityError(f"{path} has fs-verity with hash algorithm {algorithm}, not SHA-256")
    return "sha256:" + bytes(buffer[_DIGEST_HEAD.size : _DIGEST_HEAD.size + size]).hex()
