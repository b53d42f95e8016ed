"""Node, its labels, NodeInstance and Task tables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from powernode.db.base import Base, IdMixin
from powernode.fleet.states import DesiredState, MachineState, TaskState


class Node(IdMixin, Base):
    """A machine in the fleet. Its observed `state` is written only by the lifecycle."""

    __tablename__ = "nodes"
    __table_args__ = (
        Index("ix_nodes_state", "state"),
        Index("ix_nodes_template_id", "template_id"),
        Index("ix_nodes_provider_account_id", "provider_account_id"),
    )

    name: Mapped[str] = mapped_column(String(63), unique=True)
    template_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("templates.id"))
    provider_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("provider_accounts.id")
    )
    region_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("regions.id"))
    zone_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("zones.id"))
    arch: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32), default=MachineState.PENDING)
    desired_state: Mapped[str] = mapped_column(String(32), default=DesiredState.RUNNING)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # The identity document the agent sent at enrollment (source, instance id, region, ...).
    identity: Mapped[dict[str, Any] | None]
    # {module name: manifest digest} last assigned by an apply_modules task, and whether the
    # digests the agent reports in its heartbeats match them ("in_sync" / "drifted").
    desired_modules: Mapped[dict[str, Any] | None]
    module_drift: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    state_changed_at: Mapped[dt.datetime]

    labels: Mapped[list[NodeLabel]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="NodeLabel.key"
    )

    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def label_map(self) -> dict[str, str]:
        return {label.key: label.value for label in self.labels}


class NodeLabel(Base):
    """One label of a node, kept in its own table so selectors filter in SQL on any backend."""

    __tablename__ = "node_labels"
    __table_args__ = (Index("ix_node_labels_key_value", "key", "value"),)

    node_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(317), primary_key=True)
    value: Mapped[str] = mapped_column(String(63))


class NodeInstance(IdMixin, Base):
    """A workload on a node (vm, container, docker, k3s); `spec` is validated per kind."""

    __tablename__ = "node_instances"
    __table_args__ = (
        UniqueConstraint("node_id", "name"),
        Index("ix_node_instances_state", "state"),
    )

    node_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("nodes.id"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(32), default=MachineState.PENDING)
    desired_state: Mapped[str] = mapped_column(String(32), default=DesiredState.RUNNING)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    state_changed_at: Mapped[dt.datetime]

    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Task(IdMixin, Base):
    """Work for an agent or worker; `kind` selects the payload model, exactly one target."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("(node_id IS NULL) <> (instance_id IS NULL)", name="exactly_one_target"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempt_bounds"),
        Index("ix_tasks_state_node", "state", "node_id"),
        Index("ix_tasks_instance_id", "instance_id"),
        Index("ix_tasks_lease_expires_at", "lease_expires_at"),
    )

    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    node_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("nodes.id"))
    instance_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("node_instances.id"))
    state: Mapped[str] = mapped_column(String(32), default=TaskState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_holder: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None]
    fencing_epoch: Mapped[int] = mapped_column(default=0)
    result: Mapped[dict[str, Any] | None]
    correlation_id: Mapped[uuid.UUID]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    finished_at: Mapped[dt.datetime | None]

    version: Mapped[int] = mapped_column()
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
