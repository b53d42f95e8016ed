"""Transition tables for every stateful entity, and the one function that changes state.

Contract: every write of a `state` column comes from a row of these tables, with its fleet
event in the same transaction. `StateMachine.fire` is the general writer: it resolves the event
against the table (first matching row whose guard passes), assigns the new state and adds the
fleet event to the *same* session, so both commit or neither does. Callers own the transaction.

The one other writer is a compare-and-set fast path for hot, contended transitions (an agent
claiming a task): `StateMachine.compare_and_set` hands out the values of an unguarded row for an
`UPDATE ... WHERE state = <source>`, and the caller writes the row's event beside it
(fleet/claims.py; tests/fleet/test_claims.py checks it equals the `fire` path).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from powernode.errors import InvalidTransition
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.states import DesiredState, MachineEvent, MachineState, TaskEvent, TaskState

S = TypeVar("S", MachineState, TaskState)
E = TypeVar("E", MachineEvent, TaskEvent)


class Stateful(Protocol):
    id: uuid.UUID
    state: Any
    updated_at: Any


@dataclass(frozen=True)
class Transition(Generic[S, E]):
    """One row of a table: from `source` on `event` go to `target` if `guard` passes."""

    source: S
    event: E
    target: S
    guard: Callable[[Any], bool] | None = None
    severity: Severity = Severity.ROUTINE


class StateMachine(Generic[S, E]):
    """A transition table for one entity type, with the events only the system should fire."""

    def __init__(
        self,
        subject_type: str,
        transitions: Iterable[Transition[S, E]],
        *,
        system_events: frozenset[E],
        desired_after: dict[E, DesiredState] | None = None,
    ) -> None:
        self.subject_type = subject_type
        self.transitions: tuple[Transition[S, E], ...] = tuple(transitions)
        self.system_events: frozenset[E] = system_events
        self.desired_after: dict[E, DesiredState] = desired_after or {}

    def allowed_events(self, state: S) -> list[E]:
        """Events with at least one row leaving `state`, in table order."""
        seen: dict[E, None] = {}
        for row in self.transitions:
            if row.source == state:
                seen.setdefault(row.event, None)
        return list(seen)

    def resolve(self, entity: Stateful, event: E) -> Transition[S, E]:
        """The row that applies to `entity` on `event`, or InvalidTransition."""
        for row in self.transitions:
            matches = row.source == entity.state and row.event == event
            if matches and (row.guard is None or row.guard(entity)):
                return row
        raise InvalidTransition(
            f"{self.subject_type} {getattr(entity, 'name', None) or entity.id}",
            str(entity.state),
            str(event),
            [str(e) for e in self.allowed_events(entity.state)],
        )

    def compare_and_set(self, source: S, event: E) -> tuple[Transition[S, E], dict[str, Any]]:
        """The unguarded row for (`source`, `event`) and the column values it writes.

        For a conditional `UPDATE ... WHERE state = source`: the database then checks the
        source state, so the row must not need a guard (which would read the entity first).
        Raises at import time of the caller when the table no longer has such a row.
        """
        for row in self.transitions:
            if row.source == source and row.event == event:
                if row.guard is not None:
                    raise RuntimeError(
                        f"{self.subject_type} {source} --{event}--> has a guard; "
                        "a compare-and-set cannot apply it"
                    )
                return row, {"state": row.target}
        raise RuntimeError(f"{self.subject_type} has no transition {source} --{event}-->")

    async def fire(
        self,
        session: AsyncSession,
        entity: Stateful,
        event: E,
        ctx: EventContext,
        *,
        payload: dict[str, Any] | None = None,
    ) -> Transition[S, E]:
        """Apply `event` to `entity` and record the fleet event in the same session."""
        row = self.resolve(entity, event)
        previous = entity.state
        now = ctx.clock.now()
        entity.state = row.target
        entity.updated_at = now
        if hasattr(entity, "state_changed_at"):
            entity.state_changed_at = now
        desired = self.desired_after.get(event)
        if desired is not None:
            entity.desired_state = desired  # type: ignore[attr-defined]
        await record_event(
            session,
            ctx,
            kind=f"{self.subject_type}.{event}",
            subject_type=self.subject_type,
            subject_id=entity.id,
            severity=row.severity,
            payload={"from": str(previous), "to": str(row.target), **(payload or {})},
        )
        return row


M, ME = MachineState, MachineEvent
_CRIT = Severity.CRITICAL


def _machine_rows() -> list[Transition[MachineState, MachineEvent]]:
    t = Transition[MachineState, MachineEvent]
    live = (M.PENDING, M.PROVISIONING, M.RUNNING, M.UNREACHABLE, M.DRAINING)
    return [
        t(M.PENDING, ME.PROVISION, M.PROVISIONING),
        t(M.PROVISIONING, ME.READY, M.RUNNING),
        t(M.RUNNING, ME.HEARTBEAT_LOST, M.UNREACHABLE, severity=_CRIT),
        t(M.DRAINING, ME.HEARTBEAT_LOST, M.UNREACHABLE, severity=_CRIT),
        t(M.UNREACHABLE, ME.HEARTBEAT_RESUMED, M.RUNNING),
        t(M.RUNNING, ME.DRAIN, M.DRAINING),
        t(M.UNREACHABLE, ME.DRAIN, M.DRAINING),
        t(M.DRAINING, ME.UNDRAIN, M.RUNNING),
        t(M.RUNNING, ME.STOP, M.STOPPED),
        t(M.DRAINING, ME.STOP, M.STOPPED),
        t(M.UNREACHABLE, ME.STOP, M.STOPPED),
        t(M.FAILED, ME.STOP, M.STOPPED),
        t(M.STOPPED, ME.START, M.PROVISIONING),
        *(t(s, ME.FAIL, M.FAILED, severity=_CRIT) for s in live),
        t(M.FAILED, ME.RETRY, M.PROVISIONING),
        *(t(s, ME.TERMINATE, M.TERMINATED, severity=_CRIT) for s in (*live, M.STOPPED, M.FAILED)),
    ]


MACHINE_SYSTEM_EVENTS = frozenset({ME.READY, ME.HEARTBEAT_LOST, ME.HEARTBEAT_RESUMED})

_MACHINE_DESIRED = {
    ME.PROVISION: DesiredState.RUNNING,
    ME.START: DesiredState.RUNNING,
    ME.RETRY: DesiredState.RUNNING,
    ME.STOP: DesiredState.STOPPED,
    ME.TERMINATE: DesiredState.TERMINATED,
}

NODE_LIFECYCLE = StateMachine(
    "node", _machine_rows(), system_events=MACHINE_SYSTEM_EVENTS, desired_after=_MACHINE_DESIRED
)
INSTANCE_LIFECYCLE = StateMachine(
    "instance",
    _machine_rows(),
    system_events=MACHINE_SYSTEM_EVENTS,
    desired_after=_MACHINE_DESIRED,
)


def _attempts_left(task: Any) -> bool:
    return bool(task.attempts < task.max_attempts)


def _attempts_used(task: Any) -> bool:
    return not _attempts_left(task)


T, TE = TaskState, TaskEvent


def _task_rows() -> list[Transition[TaskState, TaskEvent]]:
    t = Transition[TaskState, TaskEvent]
    held = (T.LEASED, T.RUNNING)
    return [
        t(T.PENDING, TE.LEASE, T.LEASED),
        t(T.LEASED, TE.START, T.RUNNING),
        t(T.LEASED, TE.SUCCEED, T.SUCCEEDED),
        t(T.RUNNING, TE.SUCCEED, T.SUCCEEDED),
        *(t(s, TE.FAIL, T.PENDING, guard=_attempts_left) for s in held),
        *(t(s, TE.FAIL, T.FAILED, guard=_attempts_used, severity=_CRIT) for s in held),
        *(t(s, TE.EXPIRE, T.PENDING, guard=_attempts_left) for s in held),
        *(t(s, TE.EXPIRE, T.EXPIRED, guard=_attempts_used, severity=_CRIT) for s in held),
        *(t(s, TE.CANCEL, T.CANCELLED) for s in (T.PENDING, *held)),
        t(T.FAILED, TE.RETRY, T.PENDING),
        t(T.EXPIRED, TE.RETRY, T.PENDING),
    ]


TASK_LIFECYCLE = StateMachine(
    "task",
    _task_rows(),
    system_events=frozenset({TE.LEASE, TE.START, TE.SUCCEED, TE.FAIL, TE.EXPIRE}),
)

FINAL_TASK_STATES = frozenset({T.SUCCEEDED, T.FAILED, T.CANCELLED, T.EXPIRED})
