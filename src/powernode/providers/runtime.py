"""Carrying lifecycle changes out on the provider: after a node is created or an action commits,
its provider's driver starts, stops or destroys the machine (see providers/drivers.py).

A driver failure fails the node with the driver's reason, in its own transaction, so the
operator sees why (and can `retry`)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from powernode.db.engine import Database
from powernode.errors import InvalidTransition
from powernode.events.log import EventContext
from powernode.fleet.lifecycle import NODE_LIFECYCLE
from powernode.fleet.models import Node
from powernode.fleet.states import MachineEvent, MachineState
from powernode.pki.ca import CertificateAuthority
from powernode.pki.enrollment import issue_bootstrap_token, revoke_certificates
from powernode.pki.runtime import RevocationCache, seed_document
from powernode.providers.drivers import ProviderDriver, driver_for
from powernode.providers.models import ProviderAccount
from powernode.settings import Settings

log = logging.getLogger(__name__)

_STARTS = (MachineEvent.PROVISION, MachineEvent.START, MachineEvent.RETRY)


class ProviderRuntime:
    """What the API calls after node changes commit."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        ca: CertificateAuthority,
        revocations: RevocationCache,
    ) -> None:
        self.db = db
        self.settings = settings
        self.ca = ca
        self.revocations = revocations

    async def _driver(self, node_id: uuid.UUID) -> ProviderDriver | None:
        async with self.db.read_sessions() as session:
            node = await session.get(Node, node_id)
            if node is None or node.provider_account_id is None:
                return None
            account = await session.get(ProviderAccount, node.provider_account_id)
        return driver_for(account.kind, self.settings, self.db) if account else None

    async def node_created(self, node_id: uuid.UUID, ctx: EventContext) -> None:
        """A node on a provider with a driver is provisioned right away."""
        if await self._driver(node_id) is None:
            return
        async with self.db.transaction() as session:
            node = await session.get(Node, node_id)
            if node is None or node.state != MachineState.PENDING:
                return
            await NODE_LIFECYCLE.fire(session, node, MachineEvent.PROVISION, ctx)
        await self.node_changed(node_id, MachineEvent.PROVISION, ctx)

    async def node_changed(
        self, node_id: uuid.UUID, event: MachineEvent, ctx: EventContext
    ) -> None:
        """Carry `event` (already committed) out on the node's provider."""
        driver = await self._driver(node_id)
        if driver is None:
            return
        try:
            if event in _STARTS:
                await driver.start(node_id, await self._seed(node_id, ctx))
            elif event == MachineEvent.STOP:
                await driver.stop(node_id)
            elif event == MachineEvent.TERMINATE:
                await driver.terminate(node_id)
                await self._revoke(node_id, ctx)
        except Exception as exc:
            log.exception("provider %s: %s of node %s failed", driver.kind, event, node_id)
            await self._fail(node_id, ctx, f"{driver.kind} provider: {event} failed: {exc}")

    async def _seed(self, node_id: uuid.UUID, ctx: EventContext) -> dict[str, Any]:
        ttl = dt.timedelta(seconds=self.settings.bootstrap_token_ttl_s)
        async with self.db.transaction() as session:
            node = await session.get(Node, node_id)
            assert node is not None
            issued = await issue_bootstrap_token(session, ctx, node, ttl)
        return seed_document(self.settings, self.ca, node_id, issued.token)

    async def _revoke(self, node_id: uuid.UUID, ctx: EventContext) -> None:
        async with self.db.transaction() as session:
            node = await session.get(Node, node_id)
            assert node is not None
            serials = await revoke_certificates(
                session, ctx, node, serial=None, reason="node terminated"
            )
        self.revocations.add([int(s, 16) for s in serials])

    async def _fail(self, node_id: uuid.UUID, ctx: EventContext, reason: str) -> None:
        try:
            async with self.db.transaction() as session:
                node = await session.get(Node, node_id)
                if node is None:
                    return
                node.failure_reason = reason[:1000]
                await NODE_LIFECYCLE.fire(
                    session, node, MachineEvent.FAIL, ctx, payload={"reason": reason[:1000]}
                )
        except InvalidTransition:
            log.warning("node %s could not be failed: %s", node_id, reason)

    def status(self, kind: str, node_id: uuid.UUID) -> dict[str, Any]:
        driver = driver_for(kind, self.settings)
        return driver.status(node_id) if driver else {}
