"""NodeInstance service: workloads on nodes, with a spec validated per kind."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.crud import check_version, get_by_ref
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, Invalid
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.kinds import INSTANCE_KINDS, validate_document
from powernode.fleet.lifecycle import FINAL_TASK_STATES, INSTANCE_LIFECYCLE
from powernode.fleet.machines import machine_action
from powernode.fleet.models import NodeInstance, Task
from powernode.fleet.nodes import get_node
from powernode.fleet.states import DesiredState, MachineEvent, MachineState
from powernode.schemas import ActionRequest, Name, Version


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str = Field(min_length=1, max_length=63, description="Node id or name.")
    name: Name
    kind: str = Field(min_length=1, max_length=32, description="vm, container, docker or k3s.")
    spec: dict[str, Any] = Field(default_factory=dict)


class InstanceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version
    spec: dict[str, Any]


class InstanceOut(BaseModel):
    id: uuid.UUID
    node_id: uuid.UUID
    name: str
    kind: str
    spec: dict[str, Any]
    state: MachineState
    desired_state: DesiredState
    failure_reason: str | None
    allowed_events: list[MachineEvent]
    created_at: dt.datetime
    updated_at: dt.datetime
    state_changed_at: dt.datetime
    version: int

    @classmethod
    def of(cls, row: NodeInstance) -> InstanceOut:
        state = MachineState(row.state)
        return cls(
            id=row.id,
            node_id=row.node_id,
            name=row.name,
            kind=row.kind,
            spec=row.spec,
            state=state,
            desired_state=DesiredState(row.desired_state),
            failure_reason=row.failure_reason,
            allowed_events=INSTANCE_LIFECYCLE.allowed_events(state),
            created_at=row.created_at,
            updated_at=row.updated_at,
            state_changed_at=row.state_changed_at,
            version=row.version,
        )


class InstanceFilter(BaseModel):
    node_id: uuid.UUID | None = None
    state: MachineState | None = None
    kind: str | None = None


async def create_instance(
    session: AsyncSession, ctx: EventContext, spec: InstanceCreate
) -> NodeInstance:
    node = await get_node(session, spec.node)
    if node.state == MachineState.TERMINATED:
        raise Invalid(f"node {node.name} is terminated; it cannot take instances", field="node")
    document = validate_document(INSTANCE_KINDS, spec.kind, spec.spec, field="spec")
    taken = await session.scalar(
        select(NodeInstance.id).where(
            NodeInstance.node_id == node.id, NodeInstance.name == spec.name
        )
    )
    if taken is not None:
        raise Conflict(f"node {node.name} already has an instance named {spec.name!r}")
    now = ctx.clock.now()
    row = NodeInstance(
        node_id=node.id,
        name=spec.name,
        kind=spec.kind,
        spec=document,
        state=MachineState.PENDING,
        desired_state=DesiredState.RUNNING,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="instance.created",
        subject_type="instance",
        subject_id=row.id,
        payload={"node_id": str(node.id), "name": row.name, "kind": row.kind},
    )
    return row


async def get_instance(session: AsyncSession, ident: uuid.UUID | str) -> NodeInstance:
    return await get_by_ref(session, NodeInstance, ident, what="instance")


async def list_instances(
    session: AsyncSession, flt: InstanceFilter, *, limit: int, cursor: str | None
) -> Page[NodeInstance]:
    stmt = select(NodeInstance)
    if flt.node_id is not None:
        stmt = stmt.where(NodeInstance.node_id == flt.node_id)
    if flt.state is not None:
        stmt = stmt.where(NodeInstance.state == str(flt.state))
    if flt.kind is not None:
        stmt = stmt.where(NodeInstance.kind == flt.kind)
    return await paginate(session, stmt, NodeInstance.id, limit=limit, cursor=cursor)


async def update_instance(
    session: AsyncSession, ctx: EventContext, ident: uuid.UUID | str, patch: InstanceUpdate
) -> NodeInstance:
    row = await get_instance(session, ident)
    check_version(row, patch.version, f"instance {row.name}")
    document = validate_document(INSTANCE_KINDS, row.kind, patch.spec, field="spec")
    if document != row.spec:
        row.spec = document
        row.updated_at = ctx.clock.now()
        await session.flush()
        await record_event(
            session,
            ctx,
            kind="instance.updated",
            subject_type="instance",
            subject_id=row.id,
            payload={"spec": document},
        )
    return row


async def delete_instance(
    session: AsyncSession, ctx: EventContext, ident: uuid.UUID | str, version: int | None
) -> None:
    row = await get_instance(session, ident)
    check_version(row, version, f"instance {row.name}")
    if row.state not in (MachineState.PENDING, MachineState.TERMINATED):
        raise Conflict(
            f"instance {row.name} is {row.state}; terminate it before deleting it", state=row.state
        )
    open_tasks = await session.scalar(
        select(func.count()).where(
            Task.instance_id == row.id, Task.state.not_in([str(s) for s in FINAL_TASK_STATES])
        )
    )
    if open_tasks:
        raise Conflict(
            f"instance {row.name} has {open_tasks} unfinished task(s); cancel them first"
        )
    await session.execute(delete(Task).where(Task.instance_id == row.id))
    await record_event(
        session,
        ctx,
        kind="instance.deleted",
        subject_type="instance",
        subject_id=row.id,
        severity=Severity.CRITICAL,
        payload={"name": row.name, "node_id": str(row.node_id)},
    )
    await session.delete(row)


async def instance_action(
    session: AsyncSession,
    ctx: EventContext,
    ident: uuid.UUID | str,
    event: MachineEvent,
    request: ActionRequest,
) -> NodeInstance:
    row = await get_instance(session, ident)
    await machine_action(session, ctx, row, INSTANCE_LIFECYCLE, event, request)
    return row
