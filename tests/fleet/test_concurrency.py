"""Optimistic concurrency at the database: a writer holding an old version loses with Conflict
and changes nothing; concurrent writers on SQLite queue instead of failing."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.orm.exc import StaleDataError

from powernode.db.crud import LOST_RACE_ERRORS, commit
from powernode.db.engine import Database
from powernode.errors import Conflict
from powernode.events.log import EventContext
from powernode.fleet import nodes
from powernode.fleet.nodes import NodeCreate, NodeUpdate
from powernode.fleet.states import MachineEvent
from powernode.schemas import ActionRequest


async def test_a_writer_holding_an_old_version_loses(database: Database) -> None:
    ctx = EventContext(actor="test")
    async with database.transaction() as session:
        await nodes.create_node(session, ctx, NodeCreate(name="web-1"))

    async with database.sessions() as first, database.sessions() as second:
        held = await nodes.get_node(second, "web-1")  # second reads version 1 and keeps it...
        await second.commit()
        await nodes.update_node(first, ctx, "web-1", NodeUpdate(version=1, labels={"a": "1"}))
        await commit(first)  # ...first writes version 2...
        with pytest.raises(StaleDataError):  # ...second's UPDATE ... WHERE version = 1 fails
            await nodes.node_action(second, ctx, "web-1", MachineEvent.PROVISION, ActionRequest())
        del held

    async with database.read_sessions() as session:
        node = await nodes.get_node(session, "web-1")
        assert (node.version, node.state, node.label_map) == (2, "pending", {"a": "1"})


async def test_concurrent_writers_queue_and_stale_versions_get_conflict(
    database: Database,
) -> None:
    ctx = EventContext(actor="test")
    async with database.transaction() as session:
        await nodes.create_node(session, ctx, NodeCreate(name="web-1"))

    async def patch(value: str) -> str:
        async with database.sessions() as session:
            try:
                await nodes.update_node(
                    session, ctx, "web-1", NodeUpdate(version=1, labels={"v": value})
                )
                await commit(session)
            except Conflict:  # read after the winner committed: stale version
                return "conflict"
            except LOST_RACE_ERRORS:  # read before it: the UPDATE matched no row (API: 409)
                return "conflict"
            return "ok"

    outcomes = await asyncio.gather(*(patch(str(i)) for i in range(8)))
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
