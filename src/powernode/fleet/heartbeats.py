"""Heartbeats: acknowledged from memory, written to `node_leases` in coalesced batches.

Contract: `HeartbeatBuffer.record` never touches the database, so an agent's heartbeat is
answered at once. A flusher writes everything received since the last flush in one upsert per
1,000 nodes (a node that beat twice in between costs one row write), every `flush_interval_s`.
A node that was unreachable and beats again is brought back to running at that flush; the
`liveness` job (worker/builtin/liveness.py) marks nodes unreachable when their last beat is
older than the grace period. A crash loses at most one flush interval of beats, which only
delays (never fakes) liveness: the grace period is several intervals long.

The interval handed to agents grows with fleet size so that the fleet's beats stay under
`POWERNODE_HEARTBEAT_MAX_RATE` per second (as Nomad stretches heartbeat TTLs).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.leases import NodeLease
from powernode.fleet.lifecycle import NODE_LIFECYCLE
from powernode.fleet.models import Node
from powernode.fleet.states import MachineEvent, MachineState
from powernode.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 200  # rows per statement: each chunk's parameter processing blocks the loop
_BROUGHT_UP_BY_BEATS = {
    MachineState.UNREACHABLE: MachineEvent.HEARTBEAT_RESUMED,
    MachineState.PROVISIONING: MachineEvent.READY,
}


def _upsert(insert: Any) -> Any:
    stmt = insert(NodeLease)
    return stmt.on_conflict_do_update(
        index_elements=[NodeLease.node_id],
        set_={
            "last_heartbeat_at": stmt.excluded.last_heartbeat_at,
            "agent_version": stmt.excluded.agent_version,
            "status": stmt.excluded.status,
            "beats": NodeLease.beats + stmt.excluded.beats,
        },
    )


_UPSERT = {"postgresql": _upsert(pg_insert), "sqlite": _upsert(sqlite_insert)}


def drift_of(desired: dict[str, Any] | None, status: dict[str, Any]) -> str | None:
    """ "in_sync" or "drifted" when the node was assigned modules and its agent reports what is
    active; None when there is nothing to compare."""
    observed = status.get("modules")
    if desired is None or not isinstance(observed, dict):
        return None
    return "in_sync" if observed == desired else "drifted"


async def _record_drift(
    session: AsyncSession, ctx: EventContext, node: Node, drift: str, beat: Beat
) -> None:
    node.module_drift = drift
    await record_event(
        session,
        ctx,
        kind="node.drift_detected" if drift == "drifted" else "node.modules_in_sync",
        subject_type="node",
        subject_id=node.id,
        severity=Severity.CRITICAL if drift == "drifted" else Severity.ROUTINE,
        payload={"desired": node.desired_modules, "observed": beat.status.get("modules")},
    )


def heartbeat_interval(settings: Settings, fleet_size: int) -> float:
    """Seconds between beats for a fleet of `fleet_size` live nodes."""
    return max(settings.heartbeat_interval_s, fleet_size / settings.heartbeat_max_rate)


def grace_period(settings: Settings, fleet_size: int) -> float:
    return settings.heartbeat_grace_beats * heartbeat_interval(settings, fleet_size)


async def live_fleet_size(db: Database) -> int:
    async with db.read_sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(Node).where(Node.state != MachineState.TERMINATED)
        )
    return int(count or 0)


@dataclass
class Beat:
    at: dt.datetime
    agent_version: str
    status: dict[str, Any]
    count: int = 1


class HeartbeatBuffer:
    """See the module docstring."""

    def __init__(
        self, db: Database, clock: Clock, settings: Settings, *, flush_interval_s: float = 1.0
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.flush_interval_s = flush_interval_s
        self.pending: dict[uuid.UUID, Beat] = {}
        self.fleet_size = 0
        self.received = 0
        self.flushes = 0
        self.rows_written = 0
        self._task: asyncio.Task[None] | None = None

    def record(self, node_id: uuid.UUID, agent_version: str, status: dict[str, Any]) -> None:
        self.received += 1
        previous = self.pending.get(node_id)
        count = previous.count + 1 if previous else 1
        self.pending[node_id] = Beat(self.clock.now(), agent_version, status, count)

    def interval_s(self) -> float:
        return heartbeat_interval(self.settings, self.fleet_size)

    def grace_s(self) -> float:
        return grace_period(self.settings, self.fleet_size)

    async def start(self) -> None:
        self.fleet_size = await live_fleet_size(self.db)
        self._task = asyncio.create_task(self._run(), name="heartbeat-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()  # what arrived since the last flush

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
                ticks += 1
                if ticks % 30 == 0:
                    self.fleet_size = await live_fleet_size(self.db)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the beats; they go with the next flush
                log.warning("heartbeat flush failed; retrying", exc_info=True)

    async def flush(self) -> None:
        batch, self.pending = self.pending, {}
        if not batch:
            return
        try:
            written = await self._write(batch)
        except Exception:
            for node_id, beat in batch.items():  # newer beats win; nothing is lost
                self.pending.setdefault(node_id, beat)
            raise
        self.flushes += 1
        self.rows_written += written

    async def _write(self, batch: dict[uuid.UUID, Beat]) -> int:
        ids = list(batch)
        async with self.db.transaction() as session:
            known: dict[uuid.UUID, str] = {}
            drift: dict[uuid.UUID, str] = {}
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                rows = await session.execute(
                    select(Node.id, Node.state, Node.desired_modules, Node.module_drift).where(
                        Node.id.in_(chunk)
                    )
                )
                for node_id, state, desired, current in rows:
                    known[node_id] = state
                    now_drift = drift_of(desired, batch[node_id].status)
                    if now_drift is not None and now_drift != current:
                        drift[node_id] = now_drift
            values = [
                {
                    "node_id": node_id,
                    "last_heartbeat_at": beat.at,
                    "agent_version": beat.agent_version[:64],
                    "status": beat.status,
                    "beats": beat.count,
                }
                for node_id, beat in batch.items()
                if node_id in known  # a node deleted meanwhile
            ]
            stmt = _UPSERT[self.db.dialect]
            for start in range(0, len(values), CHUNK):
                # executemany of one cached statement: no per-flush compile of a huge VALUES
                await session.execute(stmt, values[start : start + CHUNK])
            # Beats bring an unreachable node back, and a provisioning one (an agent that kept
            # its certificate across a stop/start) up.
            back = [i for i, state in known.items() if state in _BROUGHT_UP_BY_BEATS]
            if back or drift:
                ctx = EventContext(actor="control-plane:heartbeats", clock=self.clock)
                nodes = await session.scalars(
                    select(Node).where(Node.id.in_([*back, *drift])).with_for_update()
                )
                for node in nodes:
                    event = _BROUGHT_UP_BY_BEATS.get(MachineState(node.state))
                    if event is not None:
                        await NODE_LIFECYCLE.fire(
                            session,
                            node,
                            event,
                            ctx,
                            payload={"last_heartbeat_at": batch[node.id].at.isoformat()},
                        )
                    if node.id in drift:
                        await _record_drift(session, ctx, node, drift[node.id], batch[node.id])
        return len(values)
