"""The CA's files on disk, written so that a CA appears complete or not at all.

Layout (`directory` is created 0700 if it does not exist)::

    <directory>/ca/                        0700
        root.pem                           0644  root certificate, the nodes' trust anchor
        root-key.pem                       0600  root key, PKCS#8 encrypted with the passphrase
        intermediate.pem                   0644  intermediate certificate
        intermediate-key.pem               0600  intermediate key, PKCS#8 encrypted

Atomicity: `write_ca_files` writes and fsyncs every file in a fresh staging directory
(`<directory>/.ca-staging-*`, 0700) and then renames the staging directory to `ca` in one
`rename(2)`, which is the commit. A crash before it leaves no `ca` (only an inert staging
directory); a crash after it leaves a complete one. Per-file temp-and-replace would not be
enough: a crash between two files would leave half a CA.

Concurrency: when two processes create a CA at once, the first rename wins; the loser's rename
fails because `ca` is no longer empty, it discards its staging directory and `write_ca_files`
returns False, telling the caller to load the winner's files instead.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.pki.errors import PkiInvalid

CA_SUBDIRECTORY = "ca"
ROOT_CERT = "root.pem"
ROOT_KEY = "root-key.pem"
INTERMEDIATE_CERT = "intermediate.pem"
INTERMEDIATE_KEY = "intermediate-key.pem"

PUBLIC_MODE = 0o644
PRIVATE_MODE = 0o600
DIRECTORY_MODE = 0o700


@dataclass(frozen=True)
class CaFiles:
    """The PEM contents of a CA's four files (keys already encrypted)."""

    root_cert: bytes
    root_key: bytes
    intermediate_cert: bytes
    intermediate_key: bytes

    def by_name(self) -> dict[str, tuple[bytes, int]]:
        """File name -> (content, mode)."""
        return {
            ROOT_CERT: (self.root_cert, PUBLIC_MODE),
            ROOT_KEY: (self.root_key, PRIVATE_MODE),
            INTERMEDIATE_CERT: (self.intermediate_cert, PUBLIC_MODE),
            INTERMEDIATE_KEY: (self.intermediate_key, PRIVATE_MODE),
        }


def encrypted_files(
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    intermediate: x509.Certificate,
    intermediate_key: ec.EllipticCurvePrivateKey,
    passphrase: bytes,
) -> CaFiles:
    """A two-tier CA as the four PEM files: certificates in clear, keys PKCS#8-encrypted."""
    encryption = serialization.BestAvailableEncryption(passphrase)

    def encrypted(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    return CaFiles(
        root_cert=root.public_bytes(serialization.Encoding.PEM),
        root_key=encrypted(root_key),
        intermediate_cert=intermediate.public_bytes(serialization.Encoding.PEM),
        intermediate_key=encrypted(intermediate_key),
    )


def ca_path(directory: Path) -> Path:
    """Where the committed CA lives under `directory`."""
    return directory / CA_SUBDIRECTORY


def read_ca_files(directory: Path) -> CaFiles | None:
    """The committed CA's files; None if there is none; `PkiInvalid` if some are missing."""
    ca_dir = ca_path(directory)
    try:
        # One listing, not a check per file: a concurrent commit can replace an empty `ca`
        # between two checks, which would look like a partial CA.
        present = set(os.listdir(ca_dir))
    except FileNotFoundError:
        return None
    if not present:
        return None
    names = (ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY)
    missing = [name for name in names if name not in present]
    if missing:
        # Commits are atomic, so this is damage from outside: never paper over it with a new CA.
        raise PkiInvalid(
            f"the CA in {ca_dir} is incomplete: {', '.join(missing)} missing; "
            "restore it from a backup"
        )
    content = {name: (ca_dir / name).read_bytes() for name in names}
    return CaFiles(
        root_cert=content[ROOT_CERT],
        root_key=content[ROOT_KEY],
        intermediate_cert=content[INTERMEDIATE_CERT],
        intermediate_key=content[INTERMEDIATE_KEY],
    )


def write_ca_files(directory: Path, files: CaFiles) -> bool:
    """Commit `files` as the CA under `directory`; False if another writer committed first."""
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ca-staging-", dir=directory))  # mode 0700
    try:
        for name, (content, mode) in files.by_name().items():
            _write_file(staging / name, content, mode)
        _fsync_directory(staging)
        try:
            # rename(2) replaces an empty directory but refuses a non-empty one.
            staging.rename(ca_path(directory))
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
        _fsync_directory(directory)
        return True
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _write_file(path: Path, content: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(fd, "wb") as stream:
        os.fchmod(fd, mode)  # the umask may have cleared bits that `mode` asks for
        stream.write(content)
        stream.flush()
        os.fsync(fd)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
