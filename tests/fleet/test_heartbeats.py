"""Heartbeats: coalesced batch writes, unreachable after the grace period (not after one missed
beat), back to running when beats resume; the interval grows with the fleet."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from sqlalchemy import select

from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.log import EventContext
from powernode.events.models import FleetEvent
from powernode.fleet.heartbeats import HeartbeatBuffer, grace_period, heartbeat_interval
from powernode.fleet.leases import NodeLease
from powernode.fleet.models import Node
from powernode.fleet.nodes import NodeCreate, create_node, node_action
from powernode.fleet.states import MachineEvent
from powernode.schemas import ActionRequest
from powernode.settings import Settings
from powernode.worker.jobs import get_job
from powernode.worker.leader import FileLockElection
from powernode.worker.runner import Worker

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


async def running_node(db: Database, clock: FrozenClock, name: str) -> uuid.UUID:
    ctx = EventContext(actor="test", clock=clock)
    async with db.transaction() as session:
        node = await create_node(session, ctx, NodeCreate(name=name))
        await node_action(session, ctx, node.id, MachineEvent.PROVISION, ActionRequest())
        await node_action(session, ctx, node.id, MachineEvent.READY, ActionRequest())
        return node.id


async def state_of(db: Database, node_id: uuid.UUID) -> str:
    async with db.read_sessions() as session:
        node = await session.get(Node, node_id)
        assert node is not None
        return node.state


def test_the_interval_grows_with_the_fleet_to_bound_the_write_rate(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, heartbeat_interval_s=10, heartbeat_max_rate=1000)
    assert heartbeat_interval(settings, 5_000) == 10
    assert heartbeat_interval(settings, 50_000) == 50
    assert grace_period(settings, 50_000) == 200


async def test_beats_are_coalesced_into_one_row_write_per_node(
    database: Database, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    node_id = await running_node(database, clock, "beating")
    buffer = HeartbeatBuffer(database, clock, Settings(data_dir=tmp_path))
    for n in range(3):
        buffer.record(node_id, "1.0", {"n": n})
    buffer.record(uuid.uuid4(), "1.0", {})  # a node that does not exist (deleted meanwhile)
    await buffer.flush()
    async with database.read_sessions() as session:
        leases = list(await session.scalars(select(NodeLease)))
    assert len(leases) == 1
    assert (leases[0].beats, leases[0].status, leases[0].agent_version) == (3, {"n": 2}, "1.0")
    assert buffer.rows_written == 1
    buffer.record(node_id, "1.1", {})
    await buffer.flush()
    async with database.read_sessions() as session:
        lease = await session.get(NodeLease, node_id)
    assert lease is not None
    assert lease.beats == 4


async def test_a_silent_node_becomes_unreachable_after_the_grace_period_and_comes_back(
    database: Database, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    settings = Settings(data_dir=tmp_path, database_url=database.url)
    node_id = await running_node(database, clock, "flaky")
    buffer = HeartbeatBuffer(database, clock, settings)
    worker = Worker(database, settings, clock, FileLockElection(tmp_path / "locks"))
    buffer.record(node_id, "1.0", {})
    await buffer.flush()

    clock.advance(dt.timedelta(seconds=25))  # two and a half missed beats: not yet
    await worker.run_once(get_job("liveness"))
    assert await state_of(database, node_id) == "running"

    clock.advance(dt.timedelta(seconds=20))  # 45 s > 40 s grace
    await worker.run_once(get_job("liveness"))
    assert await state_of(database, node_id) == "unreachable"

    buffer.record(node_id, "1.0", {})
    await buffer.flush()
    assert await state_of(database, node_id) == "running"


async def test_reported_module_digests_are_compared_with_the_assigned_ones(
    database: Database, tmp_path: Path
) -> None:
    clock = FrozenClock(T0)
    node_id = await running_node(database, clock, "drifty")
    async with database.transaction() as session:
        node = await session.get(Node, node_id)
        assert node is not None
        node.desired_modules = {"web": "sha256:" + "a" * 64}
    buffer = HeartbeatBuffer(database, clock, Settings(data_dir=tmp_path))

    async def beat(modules: dict[str, str]) -> str | None:
        buffer.record(node_id, "1.0", {"modules": modules})
        await buffer.flush()
        async with database.read_sessions() as session:
            row = await session.get(Node, node_id)
            assert row is not None
            return row.module_drift

    assert await beat({"web": "sha256:" + "a" * 64}) == "in_sync"
    assert await beat({"web": "sha256:" + "b" * 64}) == "drifted"
    assert await beat({"web": "sha256:" + "b" * 64}) == "drifted"  # no second event
    assert await beat({"web": "sha256:" + "a" * 64}) == "in_sync"
    async with database.read_sessions() as session:
        kinds = list(
            await session.scalars(
                select(FleetEvent.kind)
                .where(FleetEvent.subject_id == node_id, FleetEvent.kind.like("node.%"))
                .order_by(FleetEvent.id)
            )
        )
    assert kinds[-3:] == ["node.modules_in_sync", "node.drift_detected", "node.modules_in_sync"]
