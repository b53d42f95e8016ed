"""Run a command from its argv, never through a shell.

Payload (the server's `shell` kind): {"argv": [str, ...], "timeout_s": int 1..86400 = 300,
"env": {str: str} = {}} plus, agent-side, "cwd": str | null. `env` is laid over the agent's own
environment. The command runs in a new session (its own process group); on timeout, or when the
agent abandons the task, the whole group is killed (SIGKILL), so children die too. stdout and
stderr keep their first 64 KiB each (the rest is read and discarded, so the command never blocks
on a full pipe), decoded as UTF-8 with replacement characters.

Result {"exit_code", "stdout", "stderr", "truncated", "timed_out", "duration_s"}; a non-zero exit
or a timeout fails the task with that result.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

from powernode.agent.errors import TaskFailed
from powernode.agent.executors import ExecutorMeta, TaskContext
from powernode.agent.executors._payload import integer, only, optional_text, text_list, text_map

meta = ExecutorMeta(kind="shell")

OUTPUT_LIMIT = 64 * 1024
KILL_WAIT_S = 5.0
"""After the kill, how long to wait for the pipes to close (a daemonized grandchild that left the
group could hold them open forever)."""


class _Capture:
    """The first OUTPUT_LIMIT bytes of a stream; survives cancellation of its reader."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.truncated = False

    async def read_all(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            room = OUTPUT_LIMIT - len(self.kept)
            if len(chunk) > room:
                self.truncated = True
            if room > 0:
                self.kept += chunk[:room]

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


def _kill_group(pid: int) -> None:
    # The group outlives its leader while any member lives; both errors mean nothing is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Run argv; result as in the module docstring."""
    only(payload, ("argv", "timeout_s", "env", "cwd"))
    argv = text_list(payload, "argv")
    timeout_s = integer(payload, "timeout_s", 300, 1, 86400)
    env = {**os.environ, **text_map(payload, "env")}
    cwd = optional_text(payload, "cwd")
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise TaskFailed(
            f"cannot run {argv[0]!r}: {exc.strerror or exc}",
            {
                "exit_code": None,
                "stdout": "",
                "stderr": "",
                "truncated": False,
                "timed_out": False,
                "duration_s": round(time.monotonic() - started, 3),
            },
        ) from exc

    out, err = _Capture(), _Capture()
    waits = [
        asyncio.create_task(out.read_all(proc.stdout)),
        asyncio.create_task(err.read_all(proc.stderr)),
        asyncio.create_task(proc.wait()),
    ]
    timed_out = False
    try:
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        if pending:
            timed_out = True
            _kill_group(proc.pid)
            await asyncio.wait(pending, timeout=KILL_WAIT_S)
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    finally:
        for waiting in waits:
            waiting.cancel()

    result: dict[str, Any] = {
        "exit_code": proc.returncode,
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated": out.truncated or err.truncated,
        "timed_out": timed_out,
        "duration_s": round(time.monotonic() - started, 3),
    }
    if timed_out:
        raise TaskFailed(f"timed out after {timeout_s} s; its process group was killed", result)
    if proc.returncode != 0:
        raise TaskFailed(f"{argv[0]} exited with {proc.returncode}", result)
    return result
