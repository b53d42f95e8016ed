"""What nodes and instances share: the lifecycle action with its failure-reason bookkeeping."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.crud import check_version
from powernode.errors import Invalid
from powernode.events.log import EventContext
from powernode.fleet.lifecycle import StateMachine
from powernode.fleet.states import MachineEvent, MachineState
from powernode.schemas import ActionRequest


class Machine(Protocol):
    id: Any
    name: str
    state: Any
    version: int
    failure_reason: str | None
    updated_at: Any


async def machine_action(
    session: AsyncSession,
    ctx: EventContext,
    machine: Machine,
    lifecycle: StateMachine[MachineState, MachineEvent],
    event: MachineEvent,
    request: ActionRequest,
) -> None:
    """Fire `event` on a node or instance, recording the reason with the transition."""
    check_version(machine, request.version, f"{lifecycle.subject_type} {machine.name}")
    if event == MachineEvent.FAIL and not request.reason:
        raise Invalid("event 'fail' needs a reason", field="reason")
    lifecycle.resolve(machine, event)
    if event == MachineEvent.FAIL:
        machine.failure_reason = request.reason
    elif event in (MachineEvent.RETRY, MachineEvent.START):
        machine.failure_reason = None
    payload: dict[str, Any] = {}
    if request.reason:
        payload["reason"] = request.reason
    if request.details:
        payload["details"] = request.details
    await lifecycle.fire(session, machine, event, ctx, payload=payload)
    await session.flush()
