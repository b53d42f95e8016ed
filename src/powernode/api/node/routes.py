"""/node/v1: enroll (token + CSR), then heartbeat, lease tasks, report, renew (client cert).

Thin routes: the work is in pki/enrollment.py, fleet/heartbeats.py and fleet/claims.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from powernode.api.node.tls import peer_certificate
from powernode.api.runtime import require_runtime
from powernode.artifacts.assignment import as_seen_by_node
from powernode.errors import PowernodeError, Unauthorized
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet import claims
from powernode.ids import new_id
from powernode.pki import enrollment
from powernode.pki.identity import certificate_from_der, node_id_from_certificate

log = logging.getLogger(__name__)

router = APIRouter(prefix="/node/v1", tags=["node"], dependencies=[Depends(require_runtime)])

MAX_PEM = 16 * 1024


class EnrollIn(BaseModel):
    token: str = Field(max_length=64, description="The bootstrap token: 6 + 16 chars [a-z0-9].")
    csr: str = Field(max_length=MAX_PEM, description="PEM CSR for the node's own key.")
    identity: dict[str, Any] = Field(default_factory=dict)
    node_id: uuid.UUID | None = Field(default=None, description="From the seed; checked.")


class CertificateOut(BaseModel):
    certificate: str
    chain: str
    ca: str
    not_after: dt.datetime


class EnrollOut(CertificateOut):
    node_id: uuid.UUID
    heartbeat_interval_s: float


class HeartbeatIn(BaseModel):
    agent_version: str = Field(default="unknown", max_length=64)
    status: dict[str, Any] = Field(default_factory=dict)


class HeartbeatOut(BaseModel):
    interval_s: float
    grace_s: float


class LeaseIn(BaseModel):
    wait_s: float = Field(default=0, ge=0, le=60)


class ProgressIn(BaseModel):
    epoch: int = Field(ge=0)
    message: str | None = Field(default=None, max_length=2000)


class ProgressOut(BaseModel):
    lease_expires_at: dt.datetime


class CompleteIn(BaseModel):
    epoch: int = Field(ge=0)
    outcome: Literal["succeeded", "failed"]
    result: dict[str, Any] = Field(default_factory=dict)


class CompleteOut(BaseModel):
    state: str


class RenewIn(BaseModel):
    csr: str = Field(max_length=MAX_PEM)


@dataclass(frozen=True)
class NodeCaller:
    node_id: uuid.UUID
    serial: int
    ctx: EventContext


@functools.lru_cache(maxsize=65536)
def _identity(der: bytes) -> tuple[str, int]:
    """(node id, serial) of a verified client certificate; cached, since an agent sends the
    same certificate on every request of its kept-alive connection."""
    cert = certificate_from_der(der)
    return node_id_from_certificate(cert), cert.serial_number


async def _node_caller(request: Request) -> NodeCaller:
    """The node a verified, unrevoked client certificate names."""
    der = peer_certificate(request.scope)
    if der is None:
        raise Unauthorized(
            "this endpoint needs the node's client certificate: enroll first "
            "(POST /node/v1/enroll with a bootstrap token)"
        )
    node_id, serial = _identity(der)
    request.state.actor = f"node:{node_id}"
    if await request.app.state.revocations.is_revoked(serial):
        raise Unauthorized(
            f"certificate {serial:x} is revoked; the node must re-enroll with a new bootstrap token"
        )
    ctx = EventContext(
        actor=f"node:{node_id}",
        correlation_id=getattr(request.state, "correlation_id", None) or new_id(),
        clock=request.app.state.clock,
    )
    return NodeCaller(uuid.UUID(node_id), serial, ctx)


NodeDep = Annotated[NodeCaller, Depends(_node_caller)]


def _certificate_out(request: Request, pem: str, not_after: dt.datetime) -> dict[str, Any]:
    ca = request.app.state.ca
    return {
        "certificate": pem,
        "chain": ca.intermediate_pem,
        "ca": ca.root_pem,
        "not_after": not_after,
    }


@router.post("/enroll", status_code=201)
async def enroll(request: Request, body: EnrollIn) -> EnrollOut:
    """Exchange a bootstrap token and a CSR for the node's client certificate."""
    state = request.app.state
    ctx = EventContext(
        actor="enrollment",
        correlation_id=getattr(request.state, "correlation_id", None) or new_id(),
        clock=state.clock,
    )
    lifetime = dt.timedelta(seconds=state.settings.node_cert_lifetime_s)
    try:
        async with state.db.transaction() as session:
            node, issued = await enrollment.enroll(
                session,
                ctx,
                state.ca,
                token=body.token,
                csr_pem=body.csr.encode(),
                identity=body.identity,
                node_hint=body.node_id,
                lifetime=lifetime,
            )
    except PowernodeError as exc:
        await _record_refusal(request, ctx, body, exc)
        raise
    state.heartbeats.record(node.id, "enrolled", {})
    return EnrollOut(
        node_id=node.id,
        heartbeat_interval_s=state.heartbeats.interval_s(),
        **_certificate_out(request, issued.pem, issued.not_after),
    )


async def _record_refusal(
    request: Request, ctx: EventContext, body: EnrollIn, exc: PowernodeError
) -> None:
    token_id = body.token.split(".", 1)[0][:6]
    try:
        async with request.app.state.db.transaction() as session:
            await record_event(
                session,
                ctx,
                kind="node.enroll_refused",
                subject_type="node",
                subject_id=body.node_id,
                severity=Severity.CRITICAL,
                payload={
                    "token_id": token_id,
                    "reason": exc.detail[:500],
                    "client": request.client.host if request.client else None,
                },
            )
    except Exception:  # auditing must not turn a refusal into a 500
        log.exception("could not record a refused enrollment")


@router.post("/heartbeat")
async def heartbeat(request: Request, caller: NodeDep, body: HeartbeatIn) -> HeartbeatOut:
    """I am alive; answered from memory, written in coalesced batches."""
    beats = request.app.state.heartbeats
    beats.record(caller.node_id, body.agent_version, body.status)
    return HeartbeatOut(interval_s=beats.interval_s(), grace_s=beats.grace_s())


@router.post(
    "/tasks/lease",
    responses={200: {"description": "A leased task."}, 204: {"description": "No task."}},
)
async def lease(request: Request, caller: NodeDep, body: LeaseIn) -> Any:
    """Lease this node's next task, waiting up to `wait_s` seconds for one."""
    state = request.app.state
    task = await claims.lease_with_wait(
        state.db,
        caller.ctx,
        state.task_waiters,
        caller.node_id,
        wait_s=body.wait_s,
        visibility_s=state.settings.task_visibility_timeout_s,
    )
    if task is None:
        return Response(status_code=204)
    return as_seen_by_node(task, state.settings, request.headers.get("host"))


@router.post("/tasks/{task_id}/progress")
async def progress(
    request: Request, caller: NodeDep, task_id: uuid.UUID, body: ProgressIn
) -> ProgressOut:
    """Still working: extends the lease by the visibility timeout."""
    state = request.app.state
    expires = await claims.extend(
        state.db,
        caller.ctx,
        caller.node_id,
        task_id,
        body.epoch,
        state.settings.task_visibility_timeout_s,
        body.message,
    )
    return ProgressOut(lease_expires_at=expires)


@router.post("/tasks/{task_id}/complete")
async def complete(
    request: Request, caller: NodeDep, task_id: uuid.UUID, body: CompleteIn
) -> CompleteOut:
    """The outcome, under the lease's epoch (a stale epoch is refused with 409)."""
    new_state = await claims.complete(
        request.app.state.db,
        caller.ctx,
        caller.node_id,
        task_id,
        body.epoch,
        body.outcome == "succeeded",
        body.result,
    )
    return CompleteOut(state=new_state)


@router.post("/certificate")
async def renew(request: Request, caller: NodeDep, body: RenewIn) -> CertificateOut:
    """A new certificate for a new key, authenticated by the current certificate."""
    state = request.app.state
    async with state.db.transaction() as session:
        issued = await enrollment.renew(
            session,
            caller.ctx,
            state.ca,
            node_id=caller.node_id,
            current_serial=caller.serial,
            csr_pem=body.csr.encode(),
            lifetime=dt.timedelta(seconds=state.settings.node_cert_lifetime_s),
        )
    return CertificateOut(**_certificate_out(request, issued.pem, issued.not_after))
