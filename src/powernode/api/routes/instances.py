"""/api/v1/instances"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response, status

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
from powernode.auth.roles import Permission
from powernode.db.crud import commit
from powernode.fleet import instances
from powernode.fleet.instances import InstanceCreate, InstanceFilter, InstanceOut, InstanceUpdate
from powernode.fleet.lifecycle import INSTANCE_LIFECYCLE
from powernode.fleet.states import MachineEvent
from powernode.schemas import ActionRequest, PageOut

router = APIRouter(prefix="/instances", tags=["instances"])

# Firing a system event (agent reports, lease outcomes) by hand also needs OVERRIDE.
InstanceActor = Annotated[
    Caller, Depends(require(Permission.OPERATE, system_events=INSTANCE_LIFECYCLE.system_events))
]


@router.get("")
async def list_instances(
    session: SessionDep,
    _: Reader,
    flt: Annotated[InstanceFilter, Query()],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[InstanceOut]:
    page = await instances.list_instances(session, flt, limit=limit, cursor=cursor)
    return PageOut(items=[InstanceOut.of(i) for i in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_instance(
    session: SessionDep, caller: Operator, spec: InstanceCreate
) -> InstanceOut:
    """Create a workload on a node; `spec` is validated against the kind's schema."""
    row = await instances.create_instance(session, caller.ctx, spec)
    await commit(session)
    return InstanceOut.of(row)


@router.get("/{instance_id}")
async def get_instance(session: SessionDep, _: Reader, instance_id: uuid.UUID) -> InstanceOut:
    return InstanceOut.of(await instances.get_instance(session, instance_id))


@router.patch("/{instance_id}")
async def update_instance(
    session: SessionDep, caller: Operator, instance_id: uuid.UUID, patch: InstanceUpdate
) -> InstanceOut:
    row = await instances.update_instance(session, caller.ctx, instance_id, patch)
    await commit(session)
    return InstanceOut.of(row)


@router.delete("/{instance_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_instance(
    session: SessionDep, caller: Operator, instance_id: uuid.UUID, version: ExpectedVersion = None
) -> Response:
    await instances.delete_instance(session, caller.ctx, instance_id, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{instance_id}/actions/{event}")
async def instance_action(
    session: SessionDep,
    caller: InstanceActor,
    instance_id: uuid.UUID,
    event: MachineEvent,
    request: Annotated[ActionRequest | None, Body()] = None,
) -> InstanceOut:
    row = await instances.instance_action(
        session, caller.ctx, instance_id, event, request or ActionRequest()
    )
    await commit(session)
    return InstanceOut.of(row)
