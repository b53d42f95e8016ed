"""Node liveness: a running or draining node whose last heartbeat is older than the grace period
(several heartbeat intervals, so one missed beat never flaps it) becomes unreachable. Nodes
come back to running when their beats resume (see fleet/heartbeats.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select

from powernode.fleet.heartbeats import grace_period, live_fleet_size
from powernode.fleet.leases import NodeLease
from powernode.fleet.lifecycle import NODE_LIFECYCLE
from powernode.fleet.models import Node
from powernode.fleet.states import MachineEvent, MachineState
from powernode.worker.jobs import JobContext, job

BATCH = 500


@job("liveness", schedule="@every 5s", description="Mark nodes without heartbeats unreachable.")
async def liveness(jc: JobContext) -> dict[str, Any]:
    grace = grace_period(jc.settings, await live_fleet_size(jc.db))
    cutoff = jc.clock.now() - dt.timedelta(seconds=grace)
    lost = 0
    async with jc.db.transaction() as session:
        stmt = (
            select(Node, NodeLease.last_heartbeat_at)
            .join(NodeLease, NodeLease.node_id == Node.id, isouter=True)
            .where(
                Node.state.in_([MachineState.RUNNING, MachineState.DRAINING]),
                or_(
                    NodeLease.last_heartbeat_at < cutoff,
                    # enrolled before leases existed, or its lease row was lost
                    (NodeLease.node_id.is_(None)) & (Node.state_changed_at < cutoff),
                ),
            )
            .limit(BATCH)
            .with_for_update(of=Node, skip_locked=True)
        )
        for node, last in (await session.execute(stmt)).all():
            await NODE_LIFECYCLE.fire(
                session,
                node,
                MachineEvent.HEARTBEAT_LOST,
                jc.events,
                payload={
                    "last_heartbeat_at": last.isoformat() if last else None,
                    "grace_s": round(grace, 1),
                },
            )
            lost += 1
    return {"unreachable": lost, "grace_s": round(grace, 1)}
