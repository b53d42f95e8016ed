"""The shared body of the reboot and shutdown executors.

The power command runs only after the task's completion has been posted (an `after_complete`
action): a machine that went down before reporting would get the task again after the lease
expired, and reboot forever. Payload {"dry_run": bool = false, "delay_s": int 0..3600 = 0}
(`delay_s` is the server's reboot payload field: the wait between completion and command).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from powernode.agent.errors import TaskFailed
from powernode.agent.executors import TaskContext
from powernode.agent.executors._payload import flag, integer, only

log = logging.getLogger(__name__)


async def power(
    action: str, command: tuple[str, ...], payload: dict[str, Any], context: TaskContext
) -> dict[str, Any]:
    """Schedule `command` after completion (unless dry_run); result {"action", "command", ...}."""
    only(payload, ("dry_run", "delay_s"))
    dry_run = flag(payload, "dry_run", False)
    delay_s = integer(payload, "delay_s", 0, 0, 3600)
    if not command:
        raise TaskFailed(f"no {action} command is configured")
    result = {"action": action, "command": list(command), "dry_run": dry_run, "delay_s": delay_s}
    if dry_run:
        return result

    async def act() -> None:
        # The machine is going down: take no further work while it does.
        context.control.drain()
        await asyncio.sleep(delay_s)
        log.warning("running power command", extra={"action": action, "command": list(command)})
        try:
            proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.DEVNULL)
            code = await proc.wait()
        except OSError as exc:
            log.error("power command failed to start", extra={"action": action, "error": str(exc)})
            return
        if code != 0:
            log.error("power command failed", extra={"action": action, "exit_code": code})

    context.after_complete.append(act)
    return result
