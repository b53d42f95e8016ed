"""Drain the agent: it finishes this task, then leases no new ones (heartbeats go on).

Draining lasts until the agent restarts; payload {} (no fields).
"""

from __future__ import annotations

from typing import Any

from powernode.agent.executors import ExecutorMeta, TaskContext
from powernode.agent.executors._payload import only

meta = ExecutorMeta(kind="drain")


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Set the agent to draining: result {"draining": true}."""
    only(payload, ())
    context.control.drain()
    return {"draining": True}
