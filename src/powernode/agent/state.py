"""The agent's state directory (docs/node-protocol.md, "Agent state directory").

| file | mode | content |
|---|---|---|
| key.pem | 0600 | the node's private key (ECDSA P-256, PKCS#8) |
| cert.pem | 0644 | the node's client certificate |
| chain.pem | 0644 | the intermediate CA certificate |
| ca.pem | 0644 | the root CA |
| seed.json | 0600 | the seed last used to enroll (its token is spent) |
| identity.json | 0644 | the identity document sent at enrollment |

The directory is 0700. Every file is replaced atomically (`fsutil.atomic_write`).

Crash-safety contract. Enrollment writes seed.json first (once the server has answered 201 the
token is spent, whatever happens next) and cert.pem last, so credentials count as present only
once the certificate matches the key. Renewal stages the new key as `key.pem.next` before it
sends the CSR, writes ca/chain/cert on success and only then renames `key.pem.next` over
`key.pem`; `prepare()` finishes (or discards) a renewal a crash interrupted. One agent process
owns a state directory; nothing here locks against a second one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powernode.agent import certs, tls
from powernode.agent.errors import SeedError, StateError
from powernode.agent.fsutil import atomic_write, fsync_dir
from powernode.agent.seed import Seed, parse_seed

log = logging.getLogger(__name__)

DIR_MODE = 0o700
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class Credentials:
    """A consistent set of node credentials as stored, with the seed that enrolled them."""

    seed: Seed
    cert_pem: str
    chain_pem: str
    ca_pem: str
    key_path: Path
    validity: certs.Validity


class StateDir:
    """One agent's state directory; the only code that reads or writes its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = root / "key.pem"
        self.next_key = root / "key.pem.next"
        self.cert = root / "cert.pem"
        self.chain = root / "chain.pem"
        self.ca = root / "ca.pem"
        self.seed = root / "seed.json"
        self.identity = root / "identity.json"

    def prepare(self) -> None:
        """Create the directory (0700) or tighten its mode, and finish an interrupted renewal."""
        try:
            self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(self.root, DIR_MODE)
        except OSError as exc:
            raise StateError(f"cannot use state directory {self.root}: {exc.strerror}") from exc
        if self.next_key.exists():
            cert = _read(self.cert)
            if cert is not None and tls.key_matches(cert, self.next_key, scratch=self.root):
                log.warning("finishing a certificate renewal interrupted by a restart")
                self._promote_next_key()
            else:
                self.discard_staged_key()

    def saved_seed(self) -> Seed | None:
        """The seed last used to enroll, or None."""
        text = _read(self.seed)
        if text is None:
            return None
        try:
            return parse_seed(json.loads(text))
        except (ValueError, SeedError) as exc:
            log.warning("ignoring unreadable %s: %s", self.seed, exc)
            return None

    def credentials(self) -> Credentials | None:
        """The stored credentials if all files are present and the key matches the certificate."""
        seed = self.saved_seed()
        cert, chain, ca = _read(self.cert), _read(self.chain), _read(self.ca)
        if seed is None or cert is None or chain is None or ca is None or not self.key.exists():
            return None
        try:
            validity = certs.validity(cert)
        except ValueError as exc:
            log.warning("ignoring unreadable %s: %s", self.cert, exc)
            return None
        if not tls.key_matches(cert, self.key, scratch=self.root):
            log.warning("%s does not belong to %s; the node must enroll again", self.key, self.cert)
            return None
        return Credentials(seed, cert, chain, ca, self.key, validity)

    def save_enrollment(
        self,
        seed: Seed,
        identity: dict[str, Any],
        key_pem: str,
        cert_pem: str,
        chain_pem: str,
        ca_pem: str,
    ) -> Credentials:
        """Store what enrollment produced, in crash-safe order, and return it."""
        self._write(self.seed, json.dumps(seed.to_json(), indent=2) + "\n", SECRET_MODE)
        self._write(self.identity, json.dumps(identity, indent=2) + "\n", PUBLIC_MODE)
        self._write(self.ca, ca_pem, PUBLIC_MODE)
        self._write(self.chain, chain_pem, PUBLIC_MODE)
        self._write(self.key, key_pem, SECRET_MODE)
        self._write(self.cert, cert_pem, PUBLIC_MODE)
        return self._loaded(seed)

    def stage_key(self, key_pem: str) -> None:
        """Keep a renewal's new key as key.pem.next until its certificate arrives."""
        self._write(self.next_key, key_pem, SECRET_MODE)

    def commit_renewal(self, cert_pem: str, chain_pem: str, ca_pem: str) -> Credentials:
        """Store the renewed certificate and make the staged key current."""
        seed = self.saved_seed()
        if seed is None or not self.next_key.exists():
            raise StateError("no renewal in progress (seed.json or key.pem.next missing)")
        self._write(self.ca, ca_pem, PUBLIC_MODE)
        self._write(self.chain, chain_pem, PUBLIC_MODE)
        self._write(self.cert, cert_pem, PUBLIC_MODE)
        self._promote_next_key()
        return self._loaded(seed)

    def discard_staged_key(self) -> None:
        """Forget an unfinished renewal's key."""
        with contextlib.suppress(FileNotFoundError):
            self.next_key.unlink()

    def _promote_next_key(self) -> None:
        os.replace(self.next_key, self.key)
        fsync_dir(self.root)

    def _loaded(self, seed: Seed) -> Credentials:
        found = self.credentials()
        if found is None or found.seed != seed:
            raise StateError(f"credentials just written to {self.root} do not read back")
        return found

    def _write(self, path: Path, text: str, mode: int) -> None:
        try:
            atomic_write(path, text.encode("utf-8"), mode)
        except OSError as exc:
            raise StateError(f"cannot write {path}: {exc.strerror}") from exc


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
