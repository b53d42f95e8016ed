"""Task leases as agents take them: claim, extend (progress), complete.

Contract
- A claim is exactly-once: on PostgreSQL the pending row is taken with `SELECT ... FOR UPDATE
  SKIP LOCKED` (concurrent claimers skip each other's rows instead of waiting or double
  claiming); on SQLite the claim runs in a BEGIN IMMEDIATE transaction, which serializes writers,
  so no two claimers ever see the same row as pending.
- Every lease increments the task's fencing epoch. Progress and completion must carry the
  epoch of the lease they hold and come from the holder; anything else is a stale lease (409):
  after a requeue the old holder can no longer report over the new one.
- Long-polling agents wait on an in-process wake-up per node, rung when a `task.created` event
  for that node reaches this process's event stream (from any `serve` process), with a poll
  every second as a backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.engine import Database
from powernode.errors import Conflict, NotFound
from powernode.events.log import EventContext
from powernode.events.stream import StreamedEvent
from powernode.fleet.lifecycle import TASK_LIFECYCLE
from powernode.fleet.models import Task
from powernode.fleet.states import TaskEvent, TaskState
from powernode.fleet.tasks import TaskActionRequest, task_action

HELD = (TaskState.LEASED, TaskState.RUNNING)


def lease_document(task: Task, visibility_s: int) -> dict[str, Any]:
    assert task.lease_expires_at is not None
    return {
        "id": str(task.id),
        "kind": task.kind,
        "payload": task.payload,
        "epoch": task.fencing_epoch,
        "attempt": task.attempts,
        "lease_expires_at": task.lease_expires_at.isoformat(),
        "visibility_timeout_s": visibility_s,
    }


async def claim_next(
    db: Database, ctx: EventContext, node_id: uuid.UUID, visibility_s: int
) -> dict[str, Any] | None:
    """Lease the node's oldest pending task, or None when it has none."""
    async with db.transaction() as session:
        stmt = (
            select(Task)
            .where(Task.node_id == node_id, Task.state == TaskState.PENDING)
            .order_by(Task.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        task = (await session.scalars(stmt)).first()
        if task is None:
            return None
        claimed = await task_action(
            session, ctx, task.id, TaskEvent.LEASE, TaskActionRequest(lease_seconds=visibility_s)
        )
        return lease_document(claimed, visibility_s)


async def _held(
    session: AsyncSession, ctx: EventContext, node_id: uuid.UUID, task_id: uuid.UUID, epoch: int
) -> Task:
    task = await session.get(Task, task_id, with_for_update=True)
    if task is None or task.node_id != node_id:
        raise NotFound(f"no task {task_id} for this node")
    if task.state not in HELD or task.fencing_epoch != epoch or task.lease_holder != ctx.actor:
        raise Conflict(
            f"stale lease on task {task_id}: you hold epoch {epoch}, the task is {task.state} "
            f"at epoch {task.fencing_epoch}; drop this result",
            current_epoch=task.fencing_epoch,
            state=task.state,
        )
    return task


async def extend(
    db: Database,
    ctx: EventContext,
    node_id: uuid.UUID,
    task_id: uuid.UUID,
    epoch: int,
    visibility_s: int,
    message: str | None,
) -> dt.datetime:
    """The holder is still working: the lease runs `visibility_s` from now."""
    async with db.transaction() as session:
        task = await _held(session, ctx, node_id, task_id, epoch)
        if task.state == TaskState.LEASED:
            payload = {"epoch": epoch, **({"message": message} if message else {})}
            await TASK_LIFECYCLE.fire(session, task, TaskEvent.START, ctx, payload=payload)
        task.lease_expires_at = ctx.clock.now() + dt.timedelta(seconds=visibility_s)
        return task.lease_expires_at


async def complete(
    db: Database,
    ctx: EventContext,
    node_id: uuid.UUID,
    task_id: uuid.UUID,
    epoch: int,
    succeeded: bool,
    result: dict[str, Any],
) -> str:
    """Record the outcome; a failure with attempts left goes back to pending."""
    async with db.transaction() as session:
        await _held(session, ctx, node_id, task_id, epoch)
        event = TaskEvent.SUCCEED if succeeded else TaskEvent.FAIL
        reason = None if succeeded else str(result.get("error") or "the agent reported failure")
        task = await task_action(
            session,
            ctx,
            task_id,
            event,
            TaskActionRequest(result=result, reason=reason[:500] if reason else None),
        )
        return task.state


class TaskWaiters:
    """Per-node wake-ups for long-polling agents (see the module docstring)."""

    def __init__(self) -> None:
        self._events: dict[uuid.UUID, asyncio.Event] = {}
        self._waiting: dict[uuid.UUID, int] = {}

    def wake(self, node_id: uuid.UUID) -> None:
        event = self._events.get(node_id)
        if event is not None:
            event.set()

    def on_events(self, batch: Iterable[StreamedEvent]) -> None:
        for item in batch:
            if item.kind == "task.created":
                node = item.payload.get("node_id")
                if node:
                    with contextlib.suppress(ValueError):
                        self.wake(uuid.UUID(node))

    async def wait(self, node_id: uuid.UUID, seconds: float) -> None:
        event = self._events.setdefault(node_id, asyncio.Event())
        self._waiting[node_id] = self._waiting.get(node_id, 0) + 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        finally:
            self._waiting[node_id] -= 1
            if self._waiting[node_id] == 0:
                del self._waiting[node_id]
                self._events.pop(node_id, None)
            else:
                event.clear()


async def lease_with_wait(
    db: Database,
    ctx: EventContext,
    waiters: TaskWaiters,
    node_id: uuid.UUID,
    *,
    wait_s: float,
    visibility_s: int,
    poll_s: float = 1.0,
) -> dict[str, Any] | None:
    """Claim a task, waiting up to `wait_s` for one to arrive."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        lease = await claim_next(db, ctx, node_id, visibility_s)
        remaining = deadline - loop.time()
        if lease is not None or remaining <= 0:
            return lease
        await waiters.wait(node_id, min(poll_s, remaining))
