"""Every lifecycle state and event of the fleet, each documented, in one place.

Nodes and node instances share one lifecycle (`MachineState`); tasks have their own
(`TaskState`). The transition tables live in `powernode.fleet.lifecycle`; nothing else assigns a
state column.
"""

from __future__ import annotations

import enum


class MachineState(enum.StrEnum):
    """Observed state of a node or node instance."""

    PENDING = "pending"
    """Declared; nothing has been created on a provider yet."""
    PROVISIONING = "provisioning"
    """The provider is creating or booting the machine; the agent has not reported in."""
    RUNNING = "running"
    """Up: the agent enrolled and is heartbeating (for an instance: the workload is up)."""
    UNREACHABLE = "unreachable"
    """Was running, but heartbeats stopped for longer than the grace period."""
    DRAINING = "draining"
    """Takes no new work and finishes what it has, before a stop or terminate."""
    STOPPED = "stopped"
    """Powered off but kept; `start` provisions it again."""
    FAILED = "failed"
    """Provisioning or runtime failure; `failure_reason` says why and `retry` provisions again."""
    TERMINATED = "terminated"
    """Destroyed on the provider. Final."""


class MachineEvent(enum.StrEnum):
    """What can happen to a node or instance."""

    PROVISION = "provision"
    """Ask the provider to create the machine."""
    READY = "ready"
    """The agent (or workload) reported in."""
    HEARTBEAT_LOST = "heartbeat_lost"
    """No heartbeat within the grace period."""
    HEARTBEAT_RESUMED = "heartbeat_resumed"
    """Heartbeats came back after the machine was unreachable."""
    DRAIN = "drain"
    """Stop taking new work."""
    UNDRAIN = "undrain"
    """Take work again after a drain."""
    STOP = "stop"
    """Power off, keeping the machine."""
    START = "start"
    """Boot a stopped machine again."""
    FAIL = "fail"
    """Record a failure; needs a reason."""
    RETRY = "retry"
    """Provision a failed machine again."""
    TERMINATE = "terminate"
    """Destroy the machine."""


class TaskState(enum.StrEnum):
    """State of a task."""

    PENDING = "pending"
    """Queued, waiting for an agent or worker to lease it."""
    LEASED = "leased"
    """Claimed by a holder under a lease with an expiry and a fencing epoch."""
    RUNNING = "running"
    """The holder reported that it started executing."""
    SUCCEEDED = "succeeded"
    """Finished successfully. Final."""
    FAILED = "failed"
    """Finished unsuccessfully with every attempt used. Final unless retried by an operator."""
    CANCELLED = "cancelled"
    """Cancelled by an operator before it finished. Final."""
    EXPIRED = "expired"
    """Its lease expired with every attempt used. Final unless retried by an operator."""


class TaskEvent(enum.StrEnum):
    """What can happen to a task."""

    LEASE = "lease"
    """A holder claims the task (attempts + 1, fencing epoch + 1)."""
    START = "start"
    """The holder began executing."""
    SUCCEED = "succeed"
    """The holder reports success."""
    FAIL = "fail"
    """The holder reports failure: back to pending while attempts remain, else failed."""
    EXPIRE = "expire"
    """The lease ran out: back to pending while attempts remain, else expired."""
    CANCEL = "cancel"
    """An operator cancels the task."""
    RETRY = "retry"
    """An operator queues a failed or expired task again with a fresh attempt budget."""


class Arch(enum.StrEnum):
    """CPU architecture of a node."""

    AMD64 = "amd64"
    ARM64 = "arm64"


class DesiredState(enum.StrEnum):
    """What the operator wants a node or instance to be; reconcile drives observed toward it."""

    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"
