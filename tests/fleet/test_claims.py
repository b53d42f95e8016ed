"""Claims: the fast path equals the general lifecycle path, and concurrent claimers never take
one task twice (PostgreSQL: SKIP LOCKED; SQLite: serialized writers)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from sqlalchemy import select

from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.log import EventContext
from powernode.events.models import FleetEvent
from powernode.fleet.claims import claim_next
from powernode.fleet.models import Task
from powernode.fleet.nodes import NodeCreate, create_node
from powernode.fleet.states import TaskEvent
from powernode.fleet.tasks import TaskActionRequest, TaskCreate, create_task, task_action

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


async def node_with_tasks(db: Database, count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    ctx = EventContext(actor="test", clock=FrozenClock(T0))
    async with db.transaction() as session:
        node = await create_node(session, ctx, NodeCreate(name=f"n{uuid.uuid4().hex[:6]}"))
        tasks = [
            (await create_task(session, ctx, TaskCreate(kind="noop", node=str(node.id)))).id
            for _ in range(count)
        ]
    return node.id, tasks


async def test_a_claim_leaves_the_task_and_event_exactly_as_the_lease_transition_does(
    database: Database,
) -> None:
    node_id, (fast, general) = await node_with_tasks(database, 2)
    ctx = EventContext(actor=f"node:{node_id}", clock=FrozenClock(T0))
    lease = await claim_next(database, ctx, node_id, 30)
    assert lease is not None
    assert lease["id"] == str(fast)
    async with database.transaction() as session:
        await task_action(
            session, ctx, general, TaskEvent.LEASE, TaskActionRequest(lease_seconds=30)
        )
    columns = (
        "state",
        "attempts",
        "fencing_epoch",
        "lease_holder",
        "lease_expires_at",
        "finished_at",
        "updated_at",
        "version",
    )
    async with database.read_sessions() as session:
        a, b = (await session.get(Task, fast)), (await session.get(Task, general))
        assert a is not None
        assert b is not None
        assert [getattr(a, c) for c in columns] == [getattr(b, c) for c in columns]
        events = {
            e.subject_id: e
            for e in await session.scalars(
                select(FleetEvent).where(FleetEvent.kind == "task.lease")
            )
        }
    assert events[fast].payload == events[general].payload
    assert events[fast].severity == events[general].severity
    assert (lease["epoch"], lease["attempt"]) == (1, 1)


async def test_concurrent_claimers_never_take_a_task_twice(database: Database) -> None:
    node_id, tasks = await node_with_tasks(database, 60)
    ctx = EventContext(actor=f"node:{node_id}", clock=FrozenClock(T0))
    taken: list[str] = []

    async def claimer() -> None:
        while (lease := await claim_next(database, ctx, node_id, 30)) is not None:
            taken.append(lease["id"])

    await asyncio.gather(*(claimer() for _ in range(8)))
    assert sorted(taken) == sorted(str(t) for t in tasks)
    async with database.read_sessions() as session:
        epochs = set(await session.scalars(select(Task.fencing_epoch)))
    assert epochs == {1}
