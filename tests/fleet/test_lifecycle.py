"""The transition tables: every row works, every missing row is refused, and `fire` is atomic."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from sqlalchemy import func, select

from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.errors import InvalidTransition
from powernode.events.log import EventContext
from powernode.events.models import FleetEvent
from powernode.fleet.lifecycle import (
    INSTANCE_LIFECYCLE,
    NODE_LIFECYCLE,
    TASK_LIFECYCLE,
    StateMachine,
    Transition,
)
from powernode.fleet.models import Node, NodeInstance, Task
from powernode.fleet.states import (
    DesiredState,
    MachineEvent,
    MachineState,
    TaskEvent,
    TaskState,
)

MACHINES: list[tuple[StateMachine[Any, Any], type[enum.Enum], type[enum.Enum]]] = [
    (NODE_LIFECYCLE, MachineState, MachineEvent),
    (INSTANCE_LIFECYCLE, MachineState, MachineEvent),
    (TASK_LIFECYCLE, TaskState, TaskEvent),
]


@dataclass
class Entity:
    """A stand-in for a node, instance or task: just what `resolve` and the guards read."""

    state: Any
    attempts: int = 0
    max_attempts: int = 3
    updated_at: Any = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


# Attempt budgets under which one of the task guards passes: some left, all used.
ATTEMPT_BUDGETS = [(0, 3), (2, 3), (3, 3)]


def _entity_passing(row: Transition[Any, Any]) -> Entity:
    """An entity in `row.source` whose attempts satisfy `row.guard`."""
    for attempts, max_attempts in ATTEMPT_BUDGETS:
        entity = Entity(state=row.source, attempts=attempts, max_attempts=max_attempts)
        if row.guard is None or row.guard(entity):
            return entity
    raise AssertionError(f"no attempt budget satisfies the guard of {row}")


def _row_cases() -> list[Any]:
    return [
        pytest.param(
            machine,
            row,
            id=f"{machine.subject_type}:{row.source}-{row.event}->{row.target}"
            + (f"[{row.guard.__name__}]" if row.guard else ""),
        )
        for machine, _states, _events in MACHINES
        for row in machine.transitions
    ]


def _refused_cases() -> list[Any]:
    cases = []
    for machine, states, events in MACHINES:
        defined = {(row.source, row.event) for row in machine.transitions}
        for state in states:
            for event in events:
                if (state, event) not in defined:
                    cases.append(
                        pytest.param(
                            machine, state, event, id=f"{machine.subject_type}:{state}-{event}"
                        )
                    )
    return cases


@pytest.mark.parametrize(("machine", "row"), _row_cases())
def test_every_table_row_resolves_to_its_target(
    machine: StateMachine[Any, Any], row: Transition[Any, Any]
) -> None:
    """Each row of a table applies to an entity in its source state that passes its guard."""
    resolved = machine.resolve(_entity_passing(row), row.event)

    assert resolved == row
    assert resolved.target == row.target


@pytest.mark.parametrize(("machine", "state", "event"), _refused_cases())
def test_events_without_a_row_are_refused_with_the_allowed_events(
    machine: StateMachine[Any, Any], state: enum.Enum, event: enum.Enum
) -> None:
    """An event with no row from the current state raises InvalidTransition naming the options."""
    with pytest.raises(InvalidTransition) as caught:
        machine.resolve(Entity(state=state), event)

    assert caught.value.extra["state"] == str(state)
    assert caught.value.extra["event"] == str(event)
    assert caught.value.extra["allowed_events"] == [str(e) for e in machine.allowed_events(state)]


@pytest.mark.parametrize("state", [TaskState.LEASED, TaskState.RUNNING])
@pytest.mark.parametrize(
    ("event", "retry_target", "final_target"),
    [
        (TaskEvent.FAIL, TaskState.PENDING, TaskState.FAILED),
        (TaskEvent.EXPIRE, TaskState.PENDING, TaskState.EXPIRED),
    ],
)
def test_task_failures_requeue_until_the_attempts_are_used(
    state: TaskState, event: TaskEvent, retry_target: TaskState, final_target: TaskState
) -> None:
    """A failed or expired task goes back to pending while attempts remain, then stays down."""
    left = TASK_LIFECYCLE.resolve(Entity(state=state, attempts=2, max_attempts=3), event)
    used = TASK_LIFECYCLE.resolve(Entity(state=state, attempts=3, max_attempts=3), event)

    assert left.target == retry_target
    assert used.target == final_target


def test_machine_tables_leave_terminated_final() -> None:
    """Nothing leaves `terminated`: it is the end of a node's or instance's life."""
    assert NODE_LIFECYCLE.allowed_events(MachineState.TERMINATED) == []
    assert INSTANCE_LIFECYCLE.allowed_events(MachineState.TERMINATED) == []


def _new_node(name: str) -> Node:
    now = dt.datetime.now(dt.UTC)
    return Node(name=name, arch="amd64", created_at=now, updated_at=now, state_changed_at=now)


async def _create_node(database: Database, name: str) -> uuid.UUID:
    async with database.transaction() as session:
        node = _new_node(name)
        session.add(node)
        await session.flush()
        return node.id


async def _node_events(database: Database, node_id: uuid.UUID) -> list[FleetEvent]:
    async with database.sessions() as session:
        rows = await session.scalars(
            select(FleetEvent).where(FleetEvent.subject_id == node_id).order_by(FleetEvent.id)
        )
        return list(rows)


async def test_fire_changes_state_and_records_the_event_in_one_transaction(
    database: Database,
) -> None:
    """`fire` on a stored node commits the new state together with its fleet event."""
    node_id = await _create_node(database, "node-a")
    fired_at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    ctx = EventContext(actor="test", clock=FrozenClock(fired_at))

    async with database.transaction() as session:
        node = await session.get_one(Node, node_id)
        row = await NODE_LIFECYCLE.fire(
            session, node, MachineEvent.PROVISION, ctx, payload={"reason": "test"}
        )
    assert row.target == MachineState.PROVISIONING

    async with database.sessions() as session:
        stored = await session.get_one(Node, node_id)
        assert stored.state == MachineState.PROVISIONING
        assert stored.desired_state == DesiredState.RUNNING
        assert stored.state_changed_at == fired_at
        assert stored.updated_at == fired_at

    events = await _node_events(database, node_id)
    assert len(events) == 1
    event = events[0]
    assert event.kind == "node.provision"
    assert event.subject_type == "node"
    assert event.actor == "test"
    assert event.correlation_id == ctx.correlation_id
    assert event.severity == "routine"
    assert event.occurred_at == fired_at
    assert event.payload == {"from": "pending", "to": "provisioning", "reason": "test"}


class AbortError(Exception):
    """Raised inside a transaction to make it roll back."""


async def test_fire_in_a_rolled_back_transaction_leaves_no_trace(database: Database) -> None:
    """When the transaction rolls back, neither the state change nor the event persists."""
    node_id = await _create_node(database, "node-b")

    async def provision_then_abort() -> None:
        async with database.transaction() as session:
            node = await session.get_one(Node, node_id)
            await NODE_LIFECYCLE.fire(
                session, node, MachineEvent.PROVISION, EventContext(actor="test")
            )
            await session.flush()  # the writes reach the database before the rollback
            raise AbortError

    with pytest.raises(AbortError):
        await provision_then_abort()

    async with database.sessions() as session:
        stored = await session.get_one(Node, node_id)
        assert stored.state == MachineState.PENDING
        event_count = await session.scalar(select(func.count()).select_from(FleetEvent))
    assert event_count == 0
    assert await _node_events(database, node_id) == []


def _stored_entity(
    machine: StateMachine[Any, Any], row: Transition[Any, Any], node_id: uuid.UUID
) -> Node | NodeInstance | Task:
    """A new row of `machine`'s table in `row.source`, with attempts that pass `row.guard`."""
    budget = _entity_passing(row)
    now = dt.datetime.now(dt.UTC)
    times = {"created_at": now, "updated_at": now}
    if machine is NODE_LIFECYCLE:
        return Node(
            name=f"n-{uuid.uuid4().hex[:12]}", arch="amd64", state=row.source,
            state_changed_at=now, **times,
        )  # fmt: skip
    if machine is INSTANCE_LIFECYCLE:
        return NodeInstance(
            node_id=node_id, name=f"i-{uuid.uuid4().hex[:12]}", kind="container",
            spec={"image": "busybox"}, state=row.source, state_changed_at=now, **times,
        )  # fmt: skip
    return Task(
        kind="shell", payload={"command": ["true"]}, node_id=node_id, state=row.source,
        attempts=budget.attempts, max_attempts=budget.max_attempts,
        correlation_id=uuid.uuid4(), **times,
    )  # fmt: skip


@pytest.mark.parametrize(
    "machine", [m for m, _, _ in MACHINES], ids=[m.subject_type for m, _, _ in MACHINES]
)
async def test_every_row_fires_through_the_database(
    database: Database, machine: StateMachine[Any, Any]
) -> None:
    """Every row of every table, fired on a stored entity: the committed state is the row's
    target and exactly one `<subject>.<event>` event with from/to was committed beside it."""
    owner = await _create_node(database, f"owner-{machine.subject_type}")
    for row in machine.transitions:
        async with database.transaction() as session:
            entity = _stored_entity(machine, row, owner)
            session.add(entity)
            await session.flush()
            entity_id = entity.id
            model: type[Node | NodeInstance | Task] = type(entity)
        async with database.transaction() as session:
            loaded = cast(Node | NodeInstance | Task, await session.get_one(model, entity_id))
            fired = await machine.fire(session, loaded, row.event, EventContext(actor="test"))
        assert fired == row, row
        async with database.sessions() as session:
            stored = cast(Node | NodeInstance | Task, await session.get_one(model, entity_id))
            assert stored.state == row.target, row
            events = list(
                await session.scalars(select(FleetEvent).where(FleetEvent.subject_id == entity_id))
            )
        assert [e.kind for e in events] == [f"{machine.subject_type}.{row.event}"], row
        assert events[0].payload["from"] == str(row.source)
        assert events[0].payload["to"] == str(row.target)
        assert events[0].severity == str(row.severity)
