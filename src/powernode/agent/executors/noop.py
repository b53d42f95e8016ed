"""Do nothing but report back; for checks and tests (payload {"message": str})."""

from __future__ import annotations

from typing import Any

from powernode.agent.executors import ExecutorMeta, TaskContext
from powernode.agent.executors._payload import only, text

meta = ExecutorMeta(kind="noop")


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Echo the message: result {"message"}."""
    only(payload, ("message",))
    return {"message": text(payload, "message", "")}
