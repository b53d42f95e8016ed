"""Power the machine off, after reporting the task (payload {"dry_run": bool, "delay_s": int})."""

from __future__ import annotations

from typing import Any

from powernode.agent.executors import ExecutorMeta, TaskContext
from powernode.agent.executors._power import power

meta = ExecutorMeta(kind="shutdown")


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Run the configured shutdown command once the completion is posted (not on dry_run)."""
    return await power("shutdown", context.power.shutdown, payload, context)
