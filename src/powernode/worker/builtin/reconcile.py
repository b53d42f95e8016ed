"""Fleet reconcile: desired versus observed state. Nodes and instances stuck in provisioning
past `POWERNODE_PROVISIONING_TIMEOUT_S` become failed with a reason an operator can act on."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import select

from powernode.fleet.lifecycle import INSTANCE_LIFECYCLE, NODE_LIFECYCLE
from powernode.fleet.machines import Machine, machine_action
from powernode.fleet.models import Node, NodeInstance
from powernode.fleet.states import MachineEvent, MachineState
from powernode.schemas import ActionRequest
from powernode.worker.jobs import JobContext, job

BATCH = 500


@job("reconcile", schedule="@every 30s", description="Fail nodes stuck in provisioning.")
async def reconcile(jc: JobContext) -> dict[str, Any]:
    timeout = dt.timedelta(seconds=jc.settings.provisioning_timeout_s)
    cutoff = jc.clock.now() - timeout
    failed: dict[str, int] = {}
    kinds: tuple[tuple[type[Node] | type[NodeInstance], Any], ...] = (
        (Node, NODE_LIFECYCLE),
        (NodeInstance, INSTANCE_LIFECYCLE),
    )
    for model, lifecycle in kinds:
        count = 0
        async with jc.db.transaction() as session:
            stmt = (
                select(model)
                .where(model.state == MachineState.PROVISIONING, model.state_changed_at < cutoff)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            stuck = cast("list[Machine]", (await session.scalars(stmt)).all())
            for machine in stuck:
                reason = (
                    f"provisioning timed out: no agent reported within "
                    f"{int(timeout.total_seconds())}s (POWERNODE_PROVISIONING_TIMEOUT_S)"
                )
                request = ActionRequest(reason=reason, details={"job": "reconcile"})
                await machine_action(
                    session, jc.events, machine, lifecycle, MachineEvent.FAIL, request
                )
                count += 1
        failed[lifecycle.subject_type] = count
    return {"failed": failed}
