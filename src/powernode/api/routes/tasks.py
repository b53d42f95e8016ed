"""/api/v1/tasks"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status

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
from powernode.artifacts.assignment import apply_modules_payload, record_desired_modules
from powernode.auth.roles import Permission
from powernode.db.crud import commit
from powernode.fleet import tasks
from powernode.fleet.lifecycle import TASK_LIFECYCLE
from powernode.fleet.states import TaskEvent
from powernode.fleet.tasks import TaskActionRequest, TaskCreate, TaskFilter, TaskOut
from powernode.schemas import PageOut

router = APIRouter(prefix="/tasks", tags=["tasks"])

# Firing a system event (agent reports, lease outcomes) by hand also needs OVERRIDE.
TaskActor = Annotated[
    Caller, Depends(require(Permission.OPERATE, system_events=TASK_LIFECYCLE.system_events))
]


@router.get("")
async def list_tasks(
    session: SessionDep,
    _: Reader,
    flt: Annotated[TaskFilter, Query()],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[TaskOut]:
    page = await tasks.list_tasks(session, flt, limit=limit, cursor=cursor)
    return PageOut(items=[TaskOut.of(t) for t in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_task(
    request: Request, session: SessionDep, caller: Operator, spec: TaskCreate
) -> TaskOut:
    """Queue a task for a node or an instance; `payload` is validated against the kind.

    `apply_modules` is refused (403, with the reasons) unless every module version carries a
    signature its module's trust policy accepts; the agent then gets where to pull each one,
    its signed digest, the policy and every file's digests."""
    row = await tasks.create_task(session, caller.ctx, spec)
    if row.kind == "apply_modules":
        row.payload = await apply_modules_payload(
            session,
            request.app.state.store,
            request.app.state.settings,
            row.payload["modules"],
            trusted_roots=getattr(request.app.state, "signing_roots", ()),
        )
        if row.node_id is not None:
            await record_desired_modules(session, caller.ctx, row.node_id, row.payload)
    await commit(session)
    return TaskOut.of(row)


@router.get("/{task_id}")
async def get_task(session: SessionDep, _: Reader, task_id: uuid.UUID) -> TaskOut:
    return TaskOut.of(await tasks.get_task(session, task_id))


@router.patch("/{task_id}")
async def update_task(
    session: SessionDep, caller: Operator, task_id: uuid.UUID, patch: tasks.TaskUpdate
) -> TaskOut:
    """Change a live task's retry budget (`max_attempts`, at least the attempts made so far)."""
    row = await tasks.update_task(session, caller.ctx, task_id, patch)
    await commit(session)
    return TaskOut.of(row)


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task(
    session: SessionDep, caller: Operator, task_id: uuid.UUID, version: ExpectedVersion = None
) -> Response:
    """Delete a finished task (its events stay in the log)."""
    await tasks.delete_task(session, caller.ctx, task_id, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{task_id}/actions/{event}")
async def task_action(
    session: SessionDep,
    caller: TaskActor,
    task_id: uuid.UUID,
    event: TaskEvent,
    request: Annotated[TaskActionRequest | None, Body()] = None,
) -> TaskOut:
    """`cancel` and `retry` for operators; lease outcomes (lease, start, succeed, fail, expire)
    are the agent's and need an admin token when fired by hand."""
    row = await tasks.task_action(
        session, caller.ctx, task_id, event, request or TaskActionRequest()
    )
    await commit(session)
    return TaskOut.of(row)
