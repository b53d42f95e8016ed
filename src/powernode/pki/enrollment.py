"""Enrollment, renewal and revocation: the database side of the PKI.

Contract: every function here works inside the caller's transaction and records its fleet
events there; a refusal raises (the caller records the refusal in a transaction of its own,
since the failed one rolls back). A bootstrap token is consumed in the same transaction that
issues the certificate, so a token can never enroll twice, even when two enrollments race (the
second one's UPDATE finds the token used, or loses the version race and rolls back).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from powernode.errors import Conflict, InvalidTransition
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.lifecycle import NODE_LIFECYCLE
from powernode.fleet.models import Node
from powernode.fleet.states import MachineEvent, MachineState
from powernode.pki.bootstrap_tokens import generate_token, parse_token, secrets_match
from powernode.pki.ca import CertificateAuthority, IssuedCertificate
from powernode.pki.errors import PkiUnauthorized
from powernode.pki.models import BootstrapToken, NodeCertificate


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: dt.datetime


async def issue_bootstrap_token(
    session: AsyncSession, ctx: EventContext, node: Node, ttl: dt.timedelta
) -> IssuedToken:
    """A fresh single-use token for `node` (only its hash is stored)."""
    if node.state == MachineState.TERMINATED:
        raise Conflict(f"node {node.name} is terminated; it cannot enroll")
    token, token_id, secret_hash = generate_token()
    now = ctx.clock.now()
    row = BootstrapToken(
        token_id=token_id,
        secret_hash=secret_hash,
        node_id=node.id,
        created_by=ctx.actor,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(row)
    await record_event(
        session,
        ctx,
        kind="node.bootstrap_token_issued",
        subject_type="node",
        subject_id=node.id,
        payload={"token_id": token_id, "expires_at": row.expires_at.isoformat()},
    )
    return IssuedToken(token=token, expires_at=row.expires_at)


async def _consume_token(
    session: AsyncSession, raw: str, node_hint: uuid.UUID | None, now: dt.datetime
) -> BootstrapToken:
    token_id, secret = parse_token(raw)
    row = await session.scalar(select(BootstrapToken).where(BootstrapToken.token_id == token_id))
    if row is None or not secrets_match(row.secret_hash, secret):
        raise PkiUnauthorized(
            "the bootstrap token is not valid: ask for a new one with 'powernode node token NODE'"
        )
    if row.used_at is not None:
        raise PkiUnauthorized(
            f"bootstrap token {token_id} was already used at {row.used_at.isoformat()}; "
            "tokens are single use: ask for a new one with 'powernode node token NODE'"
        )
    if row.expires_at <= now:
        raise PkiUnauthorized(
            f"bootstrap token {token_id} expired at {row.expires_at.isoformat()}; ask for a "
            "new one with 'powernode node token NODE'"
        )
    if node_hint is not None and node_hint != row.node_id:
        raise PkiUnauthorized(
            f"bootstrap token {token_id} belongs to another node than {node_hint}"
        )
    claimed = await session.execute(
        update(BootstrapToken)
        .where(BootstrapToken.id == row.id, BootstrapToken.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(claimed, "rowcount", 0) != 1:  # a concurrent enrollment took it first
        raise PkiUnauthorized(f"bootstrap token {token_id} was already used")
    return row


async def _record_certificate(
    session: AsyncSession, node_id: uuid.UUID, issued: IssuedCertificate, now: dt.datetime
) -> None:
    session.add(
        NodeCertificate(
            serial=f"{issued.serial:x}",
            node_id=node_id,
            fingerprint_sha256=issued.fingerprint_sha256,
            not_before=issued.not_before,
            not_after=issued.not_after,
            issued_at=now,
        )
    )


async def enroll(
    session: AsyncSession,
    ctx: EventContext,
    ca: CertificateAuthority,
    *,
    token: str,
    csr_pem: bytes,
    identity: dict[str, Any],
    node_hint: uuid.UUID | None,
    lifetime: dt.timedelta,
) -> tuple[Node, IssuedCertificate]:
    """Consume the token, issue the node's certificate, and bring the node to running."""
    now = ctx.clock.now()
    row = await _consume_token(session, token, node_hint, now)
    node = await session.get(
        Node, row.node_id, with_for_update=True, options=[raiseload(Node.labels)]
    )
    if node is None or node.state == MachineState.TERMINATED:
        raise PkiUnauthorized("the node this token was issued for no longer exists")
    issued = ca.issue_node_certificate(csr_pem, str(node.id), lifetime=lifetime, now=now)
    await _record_certificate(session, node.id, issued, now)
    node.identity = identity
    ctx = ctx.caused_by(
        (
            await record_event(
                session,
                ctx,
                kind="node.enrolled",
                subject_type="node",
                subject_id=node.id,
                payload={
                    "token_id": row.token_id,
                    "serial": f"{issued.serial:x}",
                    "not_after": issued.not_after.isoformat(),
                    "identity_source": identity.get("source"),
                },
            )
        ).id
    )
    await _bring_up(session, ctx, node)
    return node, issued


async def _bring_up(session: AsyncSession, ctx: EventContext, node: Node) -> None:
    """pending/stopped/failed → provisioning → running, as far as the lifecycle allows."""
    steps = {
        MachineState.PENDING: (MachineEvent.PROVISION, MachineEvent.READY),
        MachineState.STOPPED: (MachineEvent.START, MachineEvent.READY),
        MachineState.FAILED: (MachineEvent.RETRY, MachineEvent.READY),
        MachineState.PROVISIONING: (MachineEvent.READY,),
        MachineState.UNREACHABLE: (MachineEvent.HEARTBEAT_RESUMED,),
    }
    for event in steps.get(MachineState(node.state), ()):
        try:
            await NODE_LIFECYCLE.fire(session, node, event, ctx, payload={"by": "enrollment"})
        except InvalidTransition:
            break


async def renew(
    session: AsyncSession,
    ctx: EventContext,
    ca: CertificateAuthority,
    *,
    node_id: uuid.UUID,
    current_serial: int,
    csr_pem: bytes,
    lifetime: dt.timedelta,
) -> IssuedCertificate:
    """A new certificate for a node that proved itself with its current one."""
    now = ctx.clock.now()
    issued = ca.issue_node_certificate(csr_pem, str(node_id), lifetime=lifetime, now=now)
    await _record_certificate(session, node_id, issued, now)
    await record_event(
        session,
        ctx,
        kind="node.certificate_renewed",
        subject_type="node",
        subject_id=node_id,
        payload={
            "previous_serial": f"{current_serial:x}",
            "serial": f"{issued.serial:x}",
            "not_after": issued.not_after.isoformat(),
        },
    )
    return issued


async def revoke_certificates(
    session: AsyncSession,
    ctx: EventContext,
    node: Node,
    *,
    serial: str | None,
    reason: str,
) -> list[str]:
    """Revoke one (`serial`) or every unrevoked certificate of `node`; returns the serials."""
    now = ctx.clock.now()
    stmt = select(NodeCertificate).where(
        NodeCertificate.node_id == node.id, NodeCertificate.revoked_at.is_(None)
    )
    if serial is not None:
        stmt = stmt.where(NodeCertificate.serial == serial.lower())
    rows = list(await session.scalars(stmt))
    if serial is not None and not rows:
        raise Conflict(f"node {node.name} has no unrevoked certificate with serial {serial}")
    for row in rows:
        row.revoked_at = now
        row.revocation_reason = reason
    serials = [row.serial for row in rows]
    await record_event(
        session,
        ctx,
        kind="node.certificates_revoked",
        subject_type="node",
        subject_id=node.id,
        severity=Severity.CRITICAL,
        payload={"serials": serials, "reason": reason},
    )
    return serials


async def revoked_serials(session: AsyncSession, now: dt.datetime) -> dict[int, dt.datetime]:
    """Revoked certificates that have not expired yet (what the CRL and the node API check)."""
    rows = await session.execute(
        select(NodeCertificate.serial, NodeCertificate.revoked_at).where(
            NodeCertificate.revoked_at.is_not(None), NodeCertificate.not_after > now
        )
    )
    return {int(serial, 16): revoked_at for serial, revoked_at in rows if revoked_at}


async def list_certificates(session: AsyncSession, node_id: uuid.UUID) -> list[NodeCertificate]:
    rows = await session.scalars(
        select(NodeCertificate)
        .where(NodeCertificate.node_id == node_id)
        .order_by(NodeCertificate.issued_at)
    )
    return list(rows)
