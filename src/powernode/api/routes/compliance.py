"""/api/v1/compliance"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from powernode.api.deps import Reader, SessionDep
from powernode.api.responses import json_response
from powernode.db.engine import Database
from powernode.events import compliance
from powernode.settings import Settings

router = APIRouter(prefix="/compliance", tags=["compliance"])


class SignatureOut(BaseModel):
    algorithm: str
    key_id: str
    public_key_pem: str
    value: str


class SignedSnapshotOut(BaseModel):
    snapshot: dict[str, Any]
    signature: SignatureOut


@router.get("/snapshot", response_model=SignedSnapshotOut)
async def snapshot(request: Request, session: SessionDep, caller: Reader) -> Response:
    """Every node, instance, template, module version and token, signed by the control plane's
    key; `powernode compliance verify` checks it offline. Recorded as `compliance.snapshot`."""
    settings: Settings = request.app.state.settings
    key = await run_in_threadpool(compliance.load_or_create_signing_key, settings.data_dir)
    document = await compliance.build_snapshot(session, key, caller.ctx.clock.now())
    # Its own short write transaction; first end our read one, which may hold SQLite's lock.
    await session.rollback()
    db: Database = request.app.state.db
    async with db.transaction() as writer:
        await compliance.record_snapshot_event(writer, caller.ctx, document)
    return json_response(document)
