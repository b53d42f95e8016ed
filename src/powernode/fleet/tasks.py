"""Task service: queue work for a node or instance and drive it through its lifecycle.

Lease bookkeeping (attempts, fencing epoch, holder, expiry) changes only together with the
lifecycle event that justifies it, in `task_action`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.crud import check_version, get_by_ref
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, Invalid
from powernode.events.log import EventContext, record_event
from powernode.fleet.instances import get_instance
from powernode.fleet.kinds import TASK_KINDS, validate_document
from powernode.fleet.lifecycle import FINAL_TASK_STATES, TASK_LIFECYCLE
from powernode.fleet.models import Task
from powernode.fleet.nodes import get_node
from powernode.fleet.states import MachineState, TaskEvent, TaskState
from powernode.schemas import ActionRequest, Version

DEFAULT_LEASE = dt.timedelta(seconds=30)


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(
        min_length=1, max_length=64, description="shell, apply_modules, reboot, noop."
    )
    payload: dict[str, Any] = Field(default_factory=dict)
    node: str | None = Field(default=None, max_length=63, description="Target node id or name.")
    instance_id: uuid.UUID | None = Field(default=None, description="Target instance id.")
    max_attempts: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _one_target(self) -> TaskCreate:
        if (self.node is None) == (self.instance_id is None):
            raise ValueError("give exactly one target: node or instance_id")
        return self


class TaskUpdate(BaseModel):
    """What may change on a live task: its retry budget. Kind, target and payload are what the
    task *is* (and were validated and signed-checked at creation); cancel and recreate to change
    them."""

    model_config = ConfigDict(extra="forbid")

    version: Version
    max_attempts: int | None = Field(default=None, ge=1, le=100)


class TaskActionRequest(ActionRequest):
    result: dict[str, Any] | None = Field(
        default=None, description="Outcome reported with succeed or fail."
    )
    lease_seconds: int | None = Field(default=None, ge=1, le=3600)


class TaskOut(BaseModel):
    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    node_id: uuid.UUID | None
    instance_id: uuid.UUID | None
    state: TaskState
    allowed_events: list[TaskEvent]
    attempts: int
    max_attempts: int
    lease_holder: str | None
    lease_expires_at: dt.datetime | None
    fencing_epoch: int
    result: dict[str, Any] | None
    correlation_id: uuid.UUID
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    version: int

    @classmethod
    def of(cls, row: Task) -> TaskOut:
        state = TaskState(row.state)
        return cls(
            id=row.id,
            kind=row.kind,
            payload=row.payload,
            node_id=row.node_id,
            instance_id=row.instance_id,
            state=state,
            allowed_events=TASK_LIFECYCLE.allowed_events(state),
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            lease_holder=row.lease_holder,
            lease_expires_at=row.lease_expires_at,
            fencing_epoch=row.fencing_epoch,
            result=row.result,
            correlation_id=row.correlation_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            version=row.version,
        )


class TaskFilter(BaseModel):
    state: TaskState | None = None
    kind: str | None = None
    node_id: uuid.UUID | None = None
    instance_id: uuid.UUID | None = None


async def create_task(session: AsyncSession, ctx: EventContext, spec: TaskCreate) -> Task:
    payload = validate_document(TASK_KINDS, spec.kind, spec.payload, field="payload")
    node_id = instance_id = None
    if spec.node is not None:
        node = await get_node(session, spec.node)
        if node.state == MachineState.TERMINATED:
            raise Invalid(f"node {node.name} is terminated; it cannot take tasks", field="node")
        node_id = node.id
    else:
        assert spec.instance_id is not None
        instance = await get_instance(session, spec.instance_id)
        if instance.state == MachineState.TERMINATED:
            raise Invalid(f"instance {instance.name} is terminated", field="instance_id")
        instance_id = instance.id
    now = ctx.clock.now()
    row = Task(
        kind=spec.kind,
        payload=payload,
        node_id=node_id,
        instance_id=instance_id,
        state=TaskState.PENDING,
        attempts=0,
        max_attempts=spec.max_attempts,
        fencing_epoch=0,
        correlation_id=ctx.correlation_id,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="task.created",
        subject_type="task",
        subject_id=row.id,
        payload={
            "kind": spec.kind,
            "node_id": str(node_id) if node_id else None,
            "instance_id": str(instance_id) if instance_id else None,
        },
    )
    return row


async def get_task(session: AsyncSession, ident: uuid.UUID | str) -> Task:
    return await get_by_ref(session, Task, ident, what="task")


async def list_tasks(
    session: AsyncSession, flt: TaskFilter, *, limit: int, cursor: str | None
) -> Page[Task]:
    stmt = select(Task)
    if flt.state is not None:
        stmt = stmt.where(Task.state == str(flt.state))
    if flt.kind is not None:
        stmt = stmt.where(Task.kind == flt.kind)
    if flt.node_id is not None:
        stmt = stmt.where(Task.node_id == flt.node_id)
    if flt.instance_id is not None:
        stmt = stmt.where(Task.instance_id == flt.instance_id)
    return await paginate(session, stmt, Task.id, limit=limit, cursor=cursor)


async def update_task(
    session: AsyncSession, ctx: EventContext, ident: uuid.UUID | str, patch: TaskUpdate
) -> Task:
    row = await get_task(session, ident)
    check_version(row, patch.version, f"task {row.id}")
    if patch.max_attempts is None or patch.max_attempts == row.max_attempts:
        return row
    if row.state in FINAL_TASK_STATES:
        raise Conflict(
            f"task {row.id} is {row.state}, which is final; use the retry action to run it again",
            state=row.state,
        )
    if patch.max_attempts < row.attempts:
        raise Invalid(
            f"task {row.id} has already made {row.attempts} attempt(s); "
            f"max_attempts must be at least that",
            field="max_attempts",
        )
    previous, row.max_attempts = row.max_attempts, patch.max_attempts
    row.updated_at = ctx.clock.now()
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="task.updated",
        subject_type="task",
        subject_id=row.id,
        payload={"max_attempts": {"from": previous, "to": row.max_attempts}},
    )
    return row


async def delete_task(
    session: AsyncSession, ctx: EventContext, ident: uuid.UUID | str, version: int | None
) -> None:
    row = await get_task(session, ident)
    check_version(row, version, f"task {row.id}")
    if row.state not in FINAL_TASK_STATES:
        raise Conflict(
            f"task {row.id} is {row.state}; cancel it before deleting it", state=row.state
        )
    await record_event(
        session,
        ctx,
        kind="task.deleted",
        subject_type="task",
        subject_id=row.id,
        payload={"kind": row.kind, "state": row.state},
    )
    await session.delete(row)


async def task_action(
    session: AsyncSession,
    ctx: EventContext,
    ident: uuid.UUID | str,
    event: TaskEvent,
    request: TaskActionRequest,
) -> Task:
    """Fire a task lifecycle event, with the lease bookkeeping that belongs to it."""
    row = await get_task(session, ident)
    check_version(row, request.version, f"task {row.id}")
    transition = TASK_LIFECYCLE.resolve(row, event)
    now = ctx.clock.now()
    payload: dict[str, Any] = {"attempt": row.attempts}
    if event == TaskEvent.LEASE:
        row.attempts += 1
        row.fencing_epoch += 1
        row.lease_holder = ctx.actor
        row.lease_expires_at = now + (
            dt.timedelta(seconds=request.lease_seconds) if request.lease_seconds else DEFAULT_LEASE
        )
        payload.update(attempt=row.attempts, epoch=row.fencing_epoch, holder=ctx.actor)
    elif event == TaskEvent.RETRY:
        row.attempts = 0
        row.result = None
    if event in (TaskEvent.SUCCEED, TaskEvent.FAIL) and request.result is not None:
        row.result = request.result
    if transition.target != TaskState.LEASED and transition.target != TaskState.RUNNING:
        row.lease_holder = None
        row.lease_expires_at = None
    row.finished_at = now if transition.target in FINAL_TASK_STATES else None
    if request.reason:
        payload["reason"] = request.reason
    if request.details:
        payload["details"] = request.details
    await TASK_LIFECYCLE.fire(session, row, event, ctx, payload=payload)
    await session.flush()
    return row
