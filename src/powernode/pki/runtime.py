"""The PKI as the running control plane uses it: the CA from the data dir, the node API's TLS
files, and a cache of revoked serials.

The CA's keys are encrypted with `POWERNODE_PKI_PASSPHRASE`; when it is unset, `init` generates
one into `DATA_DIR/pki-passphrase` (0600) so a single machine works out of the box. Production
passes it from a secret store instead, so the passphrase never sits beside the keys.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import os
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from powernode.artifacts.keyless import SigningAuthority
from powernode.bootstrap import write_private_file
from powernode.db.engine import Database
from powernode.errors import Invalid
from powernode.pki import store
from powernode.pki.ca import CertificateAuthority
from powernode.pki.enrollment import revoked_serials
from powernode.pki.models import CertificateAuthorityRow
from powernode.settings import Settings

log = logging.getLogger(__name__)

SERVER_CERT_LIFETIME = dt.timedelta(days=90)


def passphrase_path(settings: Settings) -> Path:
    return settings.data_dir / "pki-passphrase"


def ca_passphrase(settings: Settings, *, create: bool = False) -> bytes:
    """The configured passphrase, else the generated one in the data dir (made when `create`)."""
    if settings.pki_passphrase is not None:
        value = settings.pki_passphrase.get_secret_value().encode()
        if len(value) < 16:
            raise Invalid("POWERNODE_PKI_PASSPHRASE is too short: use at least 16 characters")
        return value
    path = passphrase_path(settings)
    if not path.exists():
        if not create:
            raise Invalid(
                f"no CA passphrase: set POWERNODE_PKI_PASSPHRASE or run 'powernode init' "
                f"(it creates {path})"
            )
        write_private_file(path, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip().encode()


def pki_dir(settings: Settings) -> Path:
    return settings.data_dir / "pki"


def open_local_ca(settings: Settings, *, create: bool = False) -> CertificateAuthority:
    """The CA in this data dir (created if missing)."""
    passphrase = ca_passphrase(settings, create=create)
    return CertificateAuthority.load_or_create(
        pki_dir(settings), passphrase, now=dt.datetime.now(dt.UTC)
    )


_CA = TypeVar("_CA")

NODE_CA_ROW = 1
SIGNING_CA_ROW = 2


async def open_ca(
    db: Database, settings: Settings, *, create: bool = False
) -> CertificateAuthority:
    """The node CA every replica shares (see `_open_shared`)."""
    return await _open_shared(
        db, NODE_CA_ROW, pki_dir(settings), lambda: open_local_ca(settings, create=create)
    )


async def open_signing_authority(db: Database, settings: Settings) -> SigningAuthority:
    """The CA that certifies keyless-style signatures (10-minute certificates), shared like the
    node CA and encrypted with the same passphrase; a separate CA, so node certificates can
    never sign modules."""
    directory = pki_dir(settings) / "signing"

    def load() -> SigningAuthority:
        passphrase = ca_passphrase(settings, create=True)
        return SigningAuthority.load_or_create(directory, passphrase, now=dt.datetime.now(dt.UTC))

    return await _open_shared(db, SIGNING_CA_ROW, directory, load)


async def _open_shared(db: Database, row_id: int, directory: Path, load: Callable[[], _CA]) -> _CA:
    """A CA every replica shares: the database holds it, the data dir keeps a copy.

    The first process to start creates it and stores it; every later one (another replica, or
    this one after its data dir was lost) takes the stored one, moving a different local CA
    aside rather than deleting it. All replicas need the same `POWERNODE_PKI_PASSPHRASE`.
    """
    async with db.read_sessions() as session:
        row = await session.get(CertificateAuthorityRow, row_id)
    if row is None:
        ca = await asyncio.to_thread(load)
        files = store.read_ca_files(directory)
        assert files is not None
        try:
            async with db.transaction() as session:
                session.add(
                    CertificateAuthorityRow(
                        id=row_id,
                        root_cert=files.root_cert.decode(),
                        root_key=files.root_key.decode(),
                        intermediate_cert=files.intermediate_cert.decode(),
                        intermediate_key=files.intermediate_key.decode(),
                        created_at=dt.datetime.now(dt.UTC),
                    )
                )
            return ca
        except IntegrityError:  # another replica stored its CA first: use that one
            async with db.read_sessions() as session:
                row = await session.get(CertificateAuthorityRow, row_id)
            assert row is not None
    shared = store.CaFiles(
        root_cert=row.root_cert.encode(),
        root_key=row.root_key.encode(),
        intermediate_cert=row.intermediate_cert.encode(),
        intermediate_key=row.intermediate_key.encode(),
    )
    local = store.read_ca_files(directory)
    if local != shared:
        if local is not None:
            aside = directory / f"ca.replaced-{int(time.time())}"
            store.ca_path(directory).rename(aside)
            log.warning("the local CA differs from the shared one; moved it to %s", aside)
        store.write_ca_files(directory, shared)
    try:
        return await asyncio.to_thread(load)
    except Invalid as exc:
        raise Invalid(
            f"cannot open the CA the database holds ({exc.detail}); every control-plane "
            "replica needs the same POWERNODE_PKI_PASSPHRASE"
        ) from exc


def node_host(settings: Settings) -> str:
    return settings.node_host or settings.host


def node_urls(settings: Settings) -> list[str]:
    """The node API URLs handed to agents."""
    if settings.node_urls:
        return list(settings.node_urls)
    host = node_host(settings)
    if host in ("0.0.0.0", "::"):  # noqa: S104 - naming the wildcard, not binding it
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return [f"https://{host}:{settings.node_port}"]


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


def write_server_tls(settings: Settings, ca: CertificateAuthority) -> TlsFiles:
    """A fresh server certificate for the node API (with the intermediate), its key (0600), and
    the bundle client certificates are verified against; written at every `serve` start."""
    names = {"localhost", "127.0.0.1", "::1", node_host(settings), *settings.node_api_names}
    names.add(settings.qemu_guest_address)  # qemu guests reach the node API there (guestfwd)
    names.discard("0.0.0.0")  # noqa: S104 - naming the wildcard, not binding it
    names.discard("::")
    if node_host(settings) in ("0.0.0.0", "::"):  # noqa: S104
        names.add(socket.getfqdn())
    hosts = sorted(names, key=lambda n: (_is_ip(n), n))
    cert, key = ca.issue_server_certificate(
        hosts, lifetime=SERVER_CERT_LIFETIME, now=dt.datetime.now(dt.UTC)
    )
    directory = pki_dir(settings) / "node-api"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = TlsFiles(directory / "server.pem", directory / "server-key.pem", directory / "ca.pem")
    write_private_file(files.key, key)
    files.cert.write_text(cert)
    files.client_ca.write_text(ca.root_pem + ca.intermediate_pem)
    os.chmod(files.cert, 0o644)
    return files


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RevocationCache:
    """Revoked serials, refreshed from the database at most every `ttl_s` seconds.

    A revocation made through this process applies at once (`add`); one made through another
    `serve` process applies within `ttl_s`.
    """

    def __init__(self, db: Database, *, ttl_s: float = 2.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._revoked: frozenset[int] = frozenset()
        self._loaded_at = -1e9
        self._lock = asyncio.Lock()

    def add(self, serials: list[int]) -> None:
        self._revoked = self._revoked | frozenset(serials)

    async def is_revoked(self, serial: int) -> bool:
        if time.monotonic() - self._loaded_at > self.ttl_s:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self.ttl_s:
                    async with self.db.read_sessions() as session:
                        revoked = await revoked_serials(session, dt.datetime.now(dt.UTC))
                    self._revoked = frozenset(revoked)
                    self._loaded_at = time.monotonic()
        return serial in self._revoked


def seed_document(
    settings: Settings, ca: CertificateAuthority, node_id: uuid.UUID, token: str
) -> dict[str, Any]:
    """The seed an agent starts from (docs/node-protocol.md)."""
    return {
        "version": 1,
        "node_id": str(node_id),
        "token": token,
        "urls": node_urls(settings),
        "ca": ca.root_pem,
    }
