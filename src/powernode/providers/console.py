"""A node's serial console log, for providers whose machines keep one (qemu)."""

from __future__ import annotations

import os

from sqlalchemy.ext.asyncio import AsyncSession

from powernode.errors import NotFound
from powernode.fleet.nodes import get_node
from powernode.providers.drivers import driver_for
from powernode.providers.models import ProviderAccount
from powernode.settings import Settings

DEFAULT_TAIL_BYTES = 64 * 1024


async def console_tail(
    session: AsyncSession,
    settings: Settings,
    ref: str,
    tail_bytes: int = DEFAULT_TAIL_BYTES,
    since: int | None = None,
) -> tuple[bytes, int]:
    """The last `tail_bytes` of the node's console log (after byte `since` when given; from
    the start if the log is shorter than that) and the log's size; empty before the first
    boot."""
    node = await get_node(session, ref)
    account = (
        await session.get(ProviderAccount, node.provider_account_id)
        if node.provider_account_id
        else None
    )
    driver = driver_for(account.kind, settings) if account else None
    path = driver.console_path(node.id) if driver else None
    if path is None:
        where = f"provider {account.kind}" if account else "no provider"
        raise NotFound(
            f"node {node.name} has no console log: its machine is on {where}, which keeps "
            "none (the qemu provider does)"
        )
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = max(0, size - tail_bytes)
            if since is not None and since <= size:
                start = max(start, since)
            handle.seek(start)
            return handle.read(size - start), size
    except FileNotFoundError:
        return b"", 0
