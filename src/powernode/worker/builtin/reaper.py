"""Task reaper: a lease whose visibility timeout passed goes back to pending (or, after
max_attempts, to expired), so a task whose agent died is run again elsewhere or given up."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from powernode.fleet.models import Task
from powernode.fleet.states import TaskEvent, TaskState
from powernode.fleet.tasks import TaskActionRequest, task_action
from powernode.worker.jobs import JobContext, job

BATCH = 500


@job("reaper", schedule="@every 5s", description="Requeue or expire tasks whose lease ran out.")
async def reap(jc: JobContext) -> dict[str, Any]:
    requeued = expired = 0
    while True:
        now = jc.clock.now()
        async with jc.db.transaction() as session:
            stmt = (
                select(Task.id)
                .where(
                    Task.state.in_([TaskState.LEASED, TaskState.RUNNING]),
                    Task.lease_expires_at < now,
                )
                .order_by(Task.lease_expires_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            ids = list(await session.scalars(stmt))
            for task_id in ids:
                request = TaskActionRequest(reason="lease expired: the holder stopped reporting")
                row = await task_action(session, jc.events, task_id, TaskEvent.EXPIRE, request)
                if row.state == TaskState.PENDING:
                    requeued += 1
                else:
                    expired += 1
        if len(ids) < BATCH:
            return {"requeued": requeued, "expired": expired}
