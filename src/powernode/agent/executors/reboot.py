"""Reboot the machine, after reporting the task (payload {"dry_run": bool, "delay_s": int})."""

from __future__ import annotations

from typing import Any

from powernode.agent.executors import ExecutorMeta, TaskContext
from powernode.agent.executors._power import power

meta = ExecutorMeta(kind="reboot")


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Run the configured reboot command once the completion is posted (not on dry_run)."""
    return await power("reboot", context.power.reboot, payload, context)
