"""/api/v1/nodes

Every node route answers with `node_document` encoded by orjson (see api/responses.py), so a
node reads the same from GET, list and writes; `response_model` documents the shape.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.api.deps import (
    Caller,
    Cursor,
    ExpectedVersion,
    Limit,
    Operator,
    Reader,
    SessionDep,
    require,
)
from powernode.api.responses import json_response
from powernode.auth.roles import Permission
from powernode.db.crud import commit
from powernode.fleet import nodes
from powernode.fleet.lifecycle import NODE_LIFECYCLE
from powernode.fleet.models import Node
from powernode.fleet.nodes import NodeCreate, NodeFilter, NodeOut, NodeUpdate, node_document
from powernode.fleet.states import MachineEvent
from powernode.providers.console import DEFAULT_TAIL_BYTES, console_tail
from powernode.schemas import ActionRequest, PageOut

router = APIRouter(prefix="/nodes", tags=["nodes"])

# Firing a system event (agent reports, lease outcomes) by hand also needs OVERRIDE.
NodeActor = Annotated[
    Caller, Depends(require(Permission.OPERATE, system_events=NODE_LIFECYCLE.system_events))
]


@router.get("", response_model=PageOut[NodeOut])
async def list_nodes(
    session: SessionDep,
    _: Reader,
    flt: Annotated[NodeFilter, Query()],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Nodes in creation order; `selector` takes a label selector such as `env=prod,tier!=db`."""
    page = await nodes.list_nodes(session, flt, limit=limit, cursor=cursor)
    return json_response({"items": page.items, "next_cursor": page.next_cursor})


@router.post("", status_code=status.HTTP_201_CREATED, response_model=NodeOut)
async def create_node(
    request: Request, session: SessionDep, caller: Operator, spec: NodeCreate
) -> Response:
    """Create a node; on a provider with a driver (local) it is provisioned at once."""
    node = await nodes.create_node(session, caller.ctx, spec)
    await commit(session)
    if node.provider_account_id is not None and request.app.state.providers is not None:
        await request.app.state.providers.node_created(node.id, caller.ctx)
        node = await _reread(session, node.id)
    return json_response(node_document(node), status.HTTP_201_CREATED)


async def _reread(session: AsyncSession, node_id: uuid.UUID) -> Node:
    session.expire_all()
    return await nodes.get_node(session, node_id)


@router.get("/{node}", response_model=NodeOut)
async def get_node(session: SessionDep, _: Reader, node: str) -> Response:
    """A node by id or name."""
    return json_response(node_document(await nodes.get_node(session, node)))


@router.get(
    "/{node}/console",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "The console log's tail."}},
)
async def node_console(
    request: Request,
    session: SessionDep,
    _: Reader,
    node: str,
    tail_bytes: Annotated[int, Query(ge=1, le=16 * 1024 * 1024)] = DEFAULT_TAIL_BYTES,
    since: Annotated[int | None, Query(ge=0, description="Only bytes after this offset.")] = None,
) -> Response:
    """The tail of the node's serial console log (qemu nodes), its size in `X-Console-Size`;
    404 when its provider keeps no console."""
    settings = request.app.state.settings
    data, size = await console_tail(session, settings, node, tail_bytes, since)
    headers = {"X-Console-Size": str(size)}
    return Response(data, media_type="text/plain; charset=utf-8", headers=headers)


@router.patch("/{node}", response_model=NodeOut)
async def update_node(
    session: SessionDep, caller: Operator, node: str, patch: NodeUpdate
) -> Response:
    row = await nodes.update_node(session, caller.ctx, node, patch)
    await commit(session)
    return json_response(node_document(row))


@router.delete("/{node}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_node(
    session: SessionDep, caller: Operator, node: str, version: ExpectedVersion = None
) -> Response:
    """Delete a pending or terminated node (terminate it first)."""
    await nodes.delete_node(session, caller.ctx, node, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{node}/actions/{event}", response_model=NodeOut)
async def node_action(
    request: Request,
    session: SessionDep,
    caller: NodeActor,
    node: str,
    event: MachineEvent,
    body: Annotated[ActionRequest | None, Body()] = None,
) -> Response:
    """Fire a lifecycle event. System events (ready, heartbeat_*) need an admin token."""
    row = await nodes.node_action(session, caller.ctx, node, event, body or ActionRequest())
    await commit(session)
    if row.provider_account_id is not None and request.app.state.providers is not None:
        await request.app.state.providers.node_changed(row.id, event, caller.ctx)
        row = await _reread(session, row.id)
    return json_response(node_document(row))
