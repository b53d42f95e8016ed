"""Operator routes for enrollment: bootstrap tokens and seeds, node certificates, revocation,
and the certificate revocation list."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, Field

from powernode.api.deps import Operator, Reader, SessionDep
from powernode.api.runtime import require_runtime
from powernode.db.crud import commit
from powernode.fleet.nodes import get_node
from powernode.pki import enrollment
from powernode.pki.runtime import seed_document

router = APIRouter(tags=["enrollment"], dependencies=[Depends(require_runtime)])


class BootstrapTokenOut(BaseModel):
    token: str = Field(description="Single use; shown once.")
    expires_at: dt.datetime
    seed: dict[str, Any] = Field(description="The seed an agent needs (docs/node-protocol.md).")


class CertificateOut(BaseModel):
    serial: str
    fingerprint_sha256: str
    not_before: dt.datetime
    not_after: dt.datetime
    issued_at: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None


class RevokeIn(BaseModel):
    serial: str | None = Field(
        default=None, max_length=40, pattern="^[0-9a-fA-F]+$", description="Default: all."
    )
    reason: str = Field(min_length=1, max_length=500)


class RevokeOut(BaseModel):
    revoked: list[str]


@router.post("/nodes/{node}/bootstrap-tokens", status_code=status.HTTP_201_CREATED)
async def create_bootstrap_token(
    request: Request, session: SessionDep, caller: Operator, node: str
) -> BootstrapTokenOut:
    """A single-use enrollment token for the node (TTL `POWERNODE_BOOTSTRAP_TOKEN_TTL_S`), and
    the seed that carries it."""
    settings = request.app.state.settings
    row = await get_node(session, node)
    ttl = dt.timedelta(seconds=settings.bootstrap_token_ttl_s)
    issued = await enrollment.issue_bootstrap_token(session, caller.ctx, row, ttl)
    await commit(session)
    seed = seed_document(settings, request.app.state.ca, row.id, issued.token)
    return BootstrapTokenOut(token=issued.token, expires_at=issued.expires_at, seed=seed)


@router.get("/nodes/{node}/certificates")
async def certificates(session: SessionDep, _: Reader, node: str) -> list[CertificateOut]:
    """Every certificate issued to the node, oldest first."""
    row = await get_node(session, node)
    return [
        CertificateOut.model_validate(c, from_attributes=True)
        for c in await enrollment.list_certificates(session, row.id)
    ]


@router.post("/nodes/{node}/certificates/revoke")
async def revoke(
    request: Request, session: SessionDep, caller: Operator, node: str, body: RevokeIn
) -> RevokeOut:
    """Revoke one certificate (`serial`) or all of the node's; the node API refuses them at once
    in this process and within seconds in the others."""
    row = await get_node(session, node)
    serials = await enrollment.revoke_certificates(
        session, caller.ctx, row, serial=body.serial, reason=body.reason
    )
    await commit(session)
    request.app.state.revocations.add([int(s, 16) for s in serials])
    return RevokeOut(revoked=serials)


@router.get(
    "/pki/crl",
    response_class=Response,
    responses={200: {"content": {"application/pkix-crl": {}}, "description": "DER CRL."}},
)
async def crl(request: Request, session: SessionDep) -> Response:
    """The certificate revocation list (DER, signed by the intermediate CA); no token needed."""
    now = request.app.state.clock.now()
    revoked = await enrollment.revoked_serials(session, now)
    der = request.app.state.ca.build_crl(
        revoked.items(), now=now, next_update=dt.timedelta(hours=1)
    )
    return Response(der, media_type="application/pkix-crl")
