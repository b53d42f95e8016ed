"""The built-in jobs on both databases: reaper, reconcile, and the run events with their chains."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from pathlib import Path

from sqlalchemy import select

from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.log import EventContext
from powernode.events.models import FleetEvent
from powernode.events.query import event_chain
from powernode.fleet.models import Node, Task
from powernode.fleet.nodes import NodeCreate, create_node, node_action
from powernode.fleet.states import MachineEvent, TaskEvent
from powernode.fleet.tasks import TaskActionRequest, TaskCreate, create_task, task_action
from powernode.schemas import ActionRequest
from powernode.settings import Settings
from powernode.worker.jobs import JobContext, get_job, job
from powernode.worker.leader import FileLockElection
from powernode.worker.runner import Worker

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def make_worker(db: Database, tmp_path: Path, clock: FrozenClock) -> Worker:
    settings = Settings(data_dir=tmp_path, database_url=db.url, provisioning_timeout_s=600)
    return Worker(db, settings, clock, FileLockElection(tmp_path / "locks"), name="w1")


async def leased_task(db: Database, clock: FrozenClock, *, max_attempts: int) -> uuid.UUID:
    ctx = EventContext(actor="test", clock=clock)
    async with db.transaction() as session:
        await create_node(session, ctx, NodeCreate(name=f"n-{uuid.uuid4().hex[:8]}"))
    async with db.transaction() as session:
        node = (await session.scalars(select(Node).order_by(Node.id.desc()))).first()
        assert node is not None
        task = await create_task(
            session, ctx, TaskCreate(kind="noop", node=str(node.id), max_attempts=max_attempts)
        )
        await task_action(
            session, ctx, task.id, TaskEvent.LEASE, TaskActionRequest(lease_seconds=30)
        )
        return task.id


async def task_state(db: Database, task_id: uuid.UUID) -> tuple[str, int]:
    async with db.read_sessions() as session:
        task = await session.get(Task, task_id)
        assert task is not None
        return task.state, task.attempts


async def test_the_reaper_requeues_an_expired_lease_and_expires_it_after_max_attempts(
    database: Database, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    worker = make_worker(database, tmp_path, clock)
    retried = await leased_task(database, clock, max_attempts=2)
    exhausted = await leased_task(database, clock, max_attempts=1)
    await worker.run_once(get_job("reaper"))
    assert await task_state(database, retried) == ("leased", 1)  # lease still valid

    clock.advance(dt.timedelta(seconds=31))
    run_id = await worker.run_once(get_job("reaper"))
    assert await task_state(database, retried) == ("pending", 1)
    assert await task_state(database, exhausted) == ("expired", 1)

    async with database.read_sessions() as session:
        run = await session.get(FleetEvent, run_id)
        assert run is not None
        assert run.kind == "job.reaper"
        assert run.payload["outcome"] == "succeeded"
        assert (run.payload["requeued"], run.payload["expired"]) == (1, 1)
        chain = await event_chain(session, run.correlation_id)
    assert chain[0].id == run_id
    caused = chain[1:]
    assert sorted(e.kind for e in caused) == ["task.expire", "task.expire"]
    assert all(e.causation_id == run_id for e in caused)
    assert {e.severity for e in caused} == {"routine", "critical"}


async def test_reconcile_fails_nodes_stuck_in_provisioning_with_a_reason(
    database: Database, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    ctx = EventContext(actor="test", clock=clock)
    async with database.transaction() as session:
        stuck = await create_node(session, ctx, NodeCreate(name="stuck"))
        fresh = await create_node(session, ctx, NodeCreate(name="fresh"))
        await node_action(session, ctx, stuck.id, MachineEvent.PROVISION, ActionRequest())
    clock.advance(dt.timedelta(seconds=500))
    async with database.transaction() as session:
        await node_action(session, ctx, fresh.id, MachineEvent.PROVISION, ActionRequest())
    clock.advance(dt.timedelta(seconds=200))  # stuck: 700 s > 600 s; fresh: 200 s

    run_id = await make_worker(database, tmp_path, clock).run_once(get_job("reconcile"))

    async with database.read_sessions() as session:
        nodes = {n.name: n for n in await session.scalars(select(Node))}
        failure = await session.scalar(select(FleetEvent).where(FleetEvent.kind == "node.fail"))
        run = await session.get(FleetEvent, run_id)
    assert nodes["stuck"].state == "failed"
    assert "provisioning timed out" in (nodes["stuck"].failure_reason or "")
    assert nodes["fresh"].state == "provisioning"
    assert failure is not None
    assert failure.causation_id == run_id
    assert run is not None
    assert run.payload["failed"] == {"node": 1, "instance": 0}


async def test_a_failing_job_is_recorded_as_a_critical_failed_run(
    database: Database, tmp_path: Path
) -> None:
    async def explode(_jc: JobContext) -> dict[str, object]:
        raise RuntimeError("disk on fire")

    job("test-explode", schedule="@every 1s", description="fails")(explode)
    from powernode.worker.jobs import JOBS

    broken = JOBS.pop("test-explode")
    worker = make_worker(database, tmp_path, FrozenClock(T0))
    with contextlib.suppress(RuntimeError):
        await worker.run_once(broken)
    async with database.read_sessions() as session:
        run = await session.scalar(select(FleetEvent).where(FleetEvent.kind == "job.test-explode"))
    assert run is not None
    assert run.severity == "critical"
    assert run.payload["outcome"] == "failed"
    assert "disk on fire" in run.payload["error"]


async def test_schedules_come_from_settings_and_off_disables_a_job(
    database: Database, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database.url,
        job_schedules={"reaper": "*/2 * * * *", "reconcile": "off"},
    )
    worker = Worker(database, settings, FrozenClock(T0), FileLockElection(tmp_path))
    plan = {s.job.name: s.schedule.text for s in worker.scheduled()}
    assert plan == {"reaper": "*/2 * * * *", "retention": "@every 3600s", "liveness": "@every 5s"}
