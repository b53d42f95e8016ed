"""`powernode init`: data directory, migrations, the first admin token, local CLI credentials."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from powernode.auth.roles import Role
from powernode.auth.tokens import TokenCreate, create_token, has_admin_token
from powernode.clock import Clock, SystemClock
from powernode.db.engine import Database
from powernode.db.migrate import database_error, upgrade_async
from powernode.errors import Unavailable
from powernode.events.log import EventContext
from powernode.settings import Settings


@dataclass(frozen=True)
class InitResult:
    token: str | None
    """The new admin token, or None when a usable admin token already existed."""
    credentials_path: Path
    database_url: str


def write_private_file(path: Path, content: str) -> None:
    """Write `content` to `path` with mode 0600 from the first byte (no window of 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def _ensure_local_provider(session: AsyncSession, clock: Clock) -> None:
    """The `local` provider account (agents on this machine), so `node create --provider local`
    works right after init."""
    from sqlalchemy import select

    from powernode.providers.models import ProviderAccount
    from powernode.providers.service import AccountCreate, create_account

    if await session.scalar(select(ProviderAccount.id).where(ProviderAccount.name == "local")):
        return
    ctx = EventContext(actor="powernode-init", clock=clock)
    await create_account(session, ctx, AccountCreate(name="local", kind="local"))


async def _ensure_qemu_provider(session: AsyncSession, clock: Clock) -> None:
    """The `qemu` provider account (VMs on this machine) when a qemu-system binary is here."""
    from sqlalchemy import select

    from powernode.providers.models import ProviderAccount
    from powernode.providers.service import AccountCreate, create_account

    if not any(shutil.which(b) for b in ("qemu-system-x86_64", "qemu-system-aarch64")):
        return
    if await session.scalar(select(ProviderAccount.id).where(ProviderAccount.name == "qemu")):
        return
    ctx = EventContext(actor="powernode-init", clock=clock)
    await create_account(session, ctx, AccountCreate(name="qemu", kind="qemu"))


async def initialize(settings: Settings, *, rotate: bool = False) -> InitResult:
    """Idempotent setup; mints an admin token when none is usable or when `rotate` is set."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    url = settings.effective_database_url
    try:
        await upgrade_async(url)
    except Exception as exc:
        # A refused login or a missing database is the operator's to fix: one line, no traceback.
        raise Unavailable(database_error(url, exc)) from exc
    db = Database(url)
    clock = SystemClock()
    try:
        from powernode.pki.runtime import open_ca

        await open_ca(db, settings, create=True)  # the node CA (+ passphrase file if none set)
        async with db.transaction() as session:
            await _ensure_local_provider(session, clock)
        async with db.transaction() as session:
            # A usable admin token is enough, unless the local CLI lost its copy: then mint
            # another one for it (the old token stays valid until someone revokes it).
            keep = not rotate and settings.cli_credentials_path.exists()
            if keep and await has_admin_token(session, clock):
                await _ensure_qemu_provider(session, clock)
                return InitResult(None, settings.cli_credentials_path, url)
            ctx = EventContext(actor="powernode-init", clock=clock)
            _, token = await create_token(
                session, ctx, TokenCreate(name="initial-admin", role=Role.ADMIN)
            )
            await _ensure_qemu_provider(session, clock)
    finally:
        await db.dispose()
    server_url = settings.url or f"http://{settings.host}:{settings.port}"
    write_private_file(
        settings.cli_credentials_path,
        json.dumps({"url": server_url, "token": token}, indent=2) + "\n",
    )
    return InitResult(token, settings.cli_credentials_path, url)
