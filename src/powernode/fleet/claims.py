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

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.engine import Database
from powernode.errors import Conflict, NotFound
from powernode.events.log import EventContext, event_values, insert_events
from powernode.events.stream import StreamedEvent
from powernode.fleet.lifecycle import TASK_LIFECYCLE
from powernode.fleet.models import Task
from powernode.fleet.states import TaskEvent, TaskState
from powernode.fleet.tasks import TaskActionRequest, task_action

HELD = (TaskState.LEASED, TaskState.RUNNING)

# claim_next applies this row of the transition table as a compare-and-set; fail at import if
# the table no longer leases pending tasks without a guard.
_LEASE, _LEASE_VALUES = TASK_LIFECYCLE.compare_and_set(TaskState.PENDING, TaskEvent.LEASE)
if _LEASE.target != TaskState.LEASED:
    raise RuntimeError("the task lease transition changed; update fleet/claims.py claim_next")


_CLAIM = (
    update(Task)
    .where(
        Task.id
        == select(Task.id)
        .where(Task.node_id == bindparam("node"), Task.state == TaskState.PENDING)
        .order_by(Task.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery(),
        Task.state == TaskState.PENDING,
    )
    .values(
        **_LEASE_VALUES,
        attempts=Task.attempts + 1,
        fencing_epoch=Task.fencing_epoch + 1,
        lease_holder=bindparam("holder"),
        lease_expires_at=bindparam("expires"),
        finished_at=None,
        updated_at=bindparam("now"),
        version=Task.version + 1,
    )
    .returning(Task.id, Task.kind, Task.payload, Task.fencing_epoch, Task.attempts)
)


async def claim_next(
    db: Database, ctx: EventContext, node_id: uuid.UUID, visibility_s: int
) -> dict[str, Any] | None:
    """Lease the node's oldest pending task, or None when it has none.

    The hot path of every agent: one UPDATE ... RETURNING takes the row (the subquery picks it
    with SKIP LOCKED on PostgreSQL) and applies exactly the `lease` row of the task lifecycle
    (pending → leased, attempts + 1, epoch + 1, holder, expiry), and the `task.lease` event is
    written beside it on the same Core connection, with no ORM session at all (and the
    statement is built once). tests/fleet/test_claims.py checks that the outcome equals the
    general `task_action` path.
    """
    now = ctx.clock.now()
    expires = now + dt.timedelta(seconds=visibility_s)
    params = {"node": node_id, "holder": ctx.actor, "expires": expires, "now": now}
    async with db.engine.begin() as conn:
        row = (await conn.execute(_CLAIM, params)).first()
        if row is None:
            return None
        task_id, kind, payload, epoch, attempt = row
        lease_event = event_values(
            ctx,
            kind=f"task.{TaskEvent.LEASE}",
            subject_type="task",
            subject_id=task_id,
            severity=_LEASE.severity,
            payload={
                "from": str(TaskState.PENDING),
                "to": str(TaskState.LEASED),
                "attempt": attempt,
                "epoch": epoch,
                "holder": ctx.actor,
            },
        )
        await insert_events(conn, [lease_event])
    return {
        "id": str(task_id),
        "kind": kind,
        "payload": payload,
        "epoch": epoch,
        "attempt": attempt,
        "lease_expires_at": expires.isoformat(),
        "visibility_timeout_s": visibility_s,
    }


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
                async with asyncio.timeout(seconds):  # not wait_for: it can swallow cancels
                    await event.wait()
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
