"""Node service: create, read, list, update, delete and lifecycle actions."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Row, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from powernode.db.crud import check_version, get_by_ref
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, Invalid
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.labels import selector_clause, validate_labels
from powernode.fleet.lifecycle import FINAL_TASK_STATES, NODE_LIFECYCLE
from powernode.fleet.machines import machine_action
from powernode.fleet.models import Node, NodeInstance, NodeLabel, Task
from powernode.fleet.states import Arch, DesiredState, MachineEvent, MachineState
from powernode.providers.models import ProviderAccount, Region, Zone
from powernode.schemas import ActionRequest, Name, UtcDatetime, Version
from powernode.templates.models import Template


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    arch: Arch = Arch.AMD64
    template_id: uuid.UUID | None = None
    provider_account_id: uuid.UUID | None = None
    region_id: uuid.UUID | None = None
    zone_id: uuid.UUID | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    _labels = field_validator("labels")(validate_labels)


class NodeUpdate(BaseModel):
    """Fields to change; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    version: Version
    labels: dict[str, str] | None = None
    template_id: uuid.UUID | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else validate_labels(value)


class NodeOut(BaseModel):
    id: uuid.UUID
    name: str
    arch: Arch
    state: MachineState
    desired_state: DesiredState
    failure_reason: str | None
    template_id: uuid.UUID | None
    provider_account_id: uuid.UUID | None
    region_id: uuid.UUID | None
    zone_id: uuid.UUID | None
    labels: dict[str, str]
    identity: dict[str, Any] | None = Field(
        default=None, description="The identity document the agent sent at enrollment."
    )
    desired_modules: dict[str, Any] | None = Field(
        default=None, description="Module digests last assigned (apply_modules)."
    )
    module_drift: str | None = Field(
        default=None, description="in_sync / drifted: what the agent reports against that."
    )
    allowed_events: list[MachineEvent]
    created_at: dt.datetime
    updated_at: dt.datetime
    state_changed_at: dt.datetime
    version: int


def node_document(node: Node | Row[Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A node in the API's shape (`NodeOut`), from an ORM node or a nodes-table row + labels.

    Built as a plain dict and encoded by orjson: listing 10,000 nodes through pydantic models
    cost more than the database. `tests/api` checks the shape against `NodeOut`.
    """
    return {
        "id": node.id,
        "name": node.name,
        "arch": node.arch,
        "state": node.state,
        "desired_state": node.desired_state,
        "failure_reason": node.failure_reason,
        "template_id": node.template_id,
        "provider_account_id": node.provider_account_id,
        "region_id": node.region_id,
        "zone_id": node.zone_id,
        "labels": node.label_map if isinstance(node, Node) else (labels or {}),
        "identity": node.identity,
        "desired_modules": node.desired_modules,
        "module_drift": node.module_drift,
        "allowed_events": _allowed_events(node.state),
        "created_at": node.created_at,
        "updated_at": node.updated_at,
        "state_changed_at": node.state_changed_at,
        "version": node.version,
    }


@functools.cache
def _allowed_events(state: str) -> list[str]:
    return [str(e) for e in NODE_LIFECYCLE.allowed_events(MachineState(state))]


class NodeFilter(BaseModel):
    state: MachineState | None = None
    selector: str | None = None
    provider_account_id: uuid.UUID | None = None
    template_id: uuid.UUID | None = None
    created_after: UtcDatetime | None = None
    created_before: UtcDatetime | None = None


async def _check_references(session: AsyncSession, spec: NodeCreate) -> None:
    async def must_exist(model: Any, ident: uuid.UUID | None, field: str) -> Any:
        if ident is None:
            return None
        row = await session.get(model, ident)
        if row is None:
            raise Invalid(f"{field} {ident} does not exist", field=field)
        return row

    await must_exist(Template, spec.template_id, "template_id")
    await must_exist(ProviderAccount, spec.provider_account_id, "provider_account_id")
    region = await must_exist(Region, spec.region_id, "region_id")
    zone = await must_exist(Zone, spec.zone_id, "zone_id")
    if region is not None and region.provider_account_id != spec.provider_account_id:
        raise Invalid(
            f"region {region.name} belongs to another provider account; set provider_account_id "
            "to the region's account",
            field="region_id",
        )
    if zone is not None and zone.region_id != spec.region_id:
        raise Invalid(f"zone {zone.name} is not in region {spec.region_id}", field="zone_id")


async def create_node(session: AsyncSession, ctx: EventContext, spec: NodeCreate) -> Node:
    if await session.scalar(select(Node.id).where(Node.name == spec.name)) is not None:
        raise Conflict(f"a node named {spec.name!r} already exists; pick another name")
    await _check_references(session, spec)
    now = ctx.clock.now()
    node = Node(
        name=spec.name,
        arch=str(spec.arch),
        template_id=spec.template_id,
        provider_account_id=spec.provider_account_id,
        region_id=spec.region_id,
        zone_id=spec.zone_id,
        state=MachineState.PENDING,
        desired_state=DesiredState.RUNNING,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
        labels=[NodeLabel(key=k, value=v) for k, v in sorted(spec.labels.items())],
    )
    session.add(node)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="node.created",
        subject_type="node",
        subject_id=node.id,
        payload={"name": node.name, "arch": node.arch, "labels": spec.labels},
    )
    return node


async def get_node(session: AsyncSession, ref: str | uuid.UUID) -> Node:
    """A node by id or name."""
    return await get_by_ref(session, Node, ref, what="node", name_column=Node.name)


def _filtered(flt: NodeFilter) -> Select[Any]:
    # Plain columns, not entities: a page of 1,000 nodes costs no ORM identity-map work.
    stmt = select(*Node.__table__.c)
    if flt.state is not None:
        stmt = stmt.where(Node.state == str(flt.state))
    if flt.selector:
        clause = selector_clause(flt.selector)
        if clause is not None:
            stmt = stmt.where(clause)
    if flt.provider_account_id is not None:
        stmt = stmt.where(Node.provider_account_id == flt.provider_account_id)
    if flt.template_id is not None:
        stmt = stmt.where(Node.template_id == flt.template_id)
    if flt.created_after is not None:
        stmt = stmt.where(Node.created_at >= flt.created_after)
    if flt.created_before is not None:
        stmt = stmt.where(Node.created_at < flt.created_before)
    return stmt


async def list_nodes(
    session: AsyncSession, flt: NodeFilter, *, limit: int, cursor: str | None
) -> Page[dict[str, Any]]:
    """One page of node documents; labels come in one query for the whole page."""
    page = await paginate(session, _filtered(flt), Node.id, limit=limit, cursor=cursor, rows=True)
    labels: dict[uuid.UUID, dict[str, str]] = {row.id: {} for row in page.items}
    if labels:
        conn = await session.connection()
        label_rows = await conn.execute(
            select(NodeLabel.node_id, NodeLabel.key, NodeLabel.value)
            .where(NodeLabel.node_id.in_(list(labels)))
            .order_by(NodeLabel.node_id, NodeLabel.key)
        )
        for node_id, key, value in label_rows:
            labels[node_id][key] = value
    items = [node_document(row, labels[row.id]) for row in page.items]
    return Page(items=items, next_cursor=page.next_cursor)


async def update_node(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, patch: NodeUpdate
) -> Node:
    node = await get_node(session, ref)
    check_version(node, patch.version, f"node {node.name}")
    changes: dict[str, Any] = {}
    if patch.labels is not None and patch.labels != node.label_map:
        node.labels = [NodeLabel(key=k, value=v) for k, v in sorted(patch.labels.items())]
        changes["labels"] = patch.labels
    if "template_id" in patch.model_fields_set and patch.template_id != node.template_id:
        if patch.template_id is not None and await session.get(Template, patch.template_id) is None:
            raise Invalid(f"template_id {patch.template_id} does not exist", field="template_id")
        node.template_id = patch.template_id
        changes["template_id"] = str(patch.template_id) if patch.template_id else None
    if changes:
        node.updated_at = ctx.clock.now()
        # Label rows live in another table: force an UPDATE of the node row so a label-only
        # change still bumps its version.
        flag_modified(node, "updated_at")
        await session.flush()
        await record_event(
            session,
            ctx,
            kind="node.updated",
            subject_type="node",
            subject_id=node.id,
            payload=changes,
        )
    return node


async def delete_node(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, version: int | None
) -> None:
    """Delete a pending or terminated node with no live instances or unfinished tasks."""
    node = await get_node(session, ref)
    check_version(node, version, f"node {node.name}")
    if node.state not in (MachineState.PENDING, MachineState.TERMINATED):
        raise Conflict(
            f"node {node.name} is {node.state}; terminate it before deleting it",
            state=node.state,
        )
    live_instances = await session.scalar(
        select(func.count()).where(
            NodeInstance.node_id == node.id, NodeInstance.state != str(MachineState.TERMINATED)
        )
    )
    if live_instances:
        raise Conflict(f"node {node.name} still has {live_instances} instance(s) not terminated")
    instance_ids = select(NodeInstance.id).where(NodeInstance.node_id == node.id)
    open_tasks = await session.scalar(
        select(func.count()).where(
            (Task.node_id == node.id) | Task.instance_id.in_(instance_ids),
            Task.state.not_in([str(s) for s in FINAL_TASK_STATES]),
        )
    )
    if open_tasks:
        raise Conflict(f"node {node.name} has {open_tasks} unfinished task(s); cancel them first")
    await session.execute(
        delete(Task).where((Task.node_id == node.id) | Task.instance_id.in_(instance_ids))
    )
    await session.execute(delete(NodeInstance).where(NodeInstance.node_id == node.id))
    await record_event(
        session,
        ctx,
        kind="node.deleted",
        subject_type="node",
        subject_id=node.id,
        severity=Severity.CRITICAL,
        payload={"name": node.name},
    )
    await session.delete(node)


async def node_action(
    session: AsyncSession,
    ctx: EventContext,
    ref: str | uuid.UUID,
    event: MachineEvent,
    request: ActionRequest,
) -> Node:
    """Fire a lifecycle event on a node (the caller checked the actor may fire it)."""
    node = await get_node(session, ref)
    await machine_action(session, ctx, node, NODE_LIFECYCLE, event, request)
    return node
