"""Post-checks: run once a new generation is current; a refusal rolls it back.

A post-check is any `async (generation, active_root) -> None` that raises `PostCheckFailed` to
refuse. `command_check` makes one from the payload's argv: it runs without a shell, in its own
process group (killed whole on timeout), with `POWERNODE_MODULES_ROOT` (the active root, through
the `current` link) and `POWERNODE_MODULES_GENERATION` in its environment; exit status 0
accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from powernode.agent.modules.errors import PostCheckFailed
from powernode.agent.modules.generations import Generation

PostCheck = Callable[[Generation, Path], Awaitable[None]]
OUTPUT_KEPT = 2048


def command_check(argv: Sequence[str], timeout_s: float) -> PostCheck:
    """A post-check running `argv`; see the module docstring."""
    command = list(argv)

    async def check(generation: Generation, active_root: Path) -> None:
        env = {
            **os.environ,
            "POWERNODE_MODULES_ROOT": str(active_root),
            "POWERNODE_MODULES_GENERATION": str(generation.number),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise PostCheckFailed(None, f"cannot run {command[0]!r}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(timeout_s):
                output = await _tail(proc.stdout)
                await proc.wait()
        except TimeoutError:
            _kill(proc.pid)
            await proc.wait()
            raise PostCheckFailed(None, f"{command[0]} timed out after {timeout_s:g} s") from None
        except asyncio.CancelledError:
            _kill(proc.pid)
            raise
        if proc.returncode != 0:
            tail = output.decode("utf-8", errors="replace").strip()
            said = f": {tail}" if tail else ""
            raise PostCheckFailed(
                None,
                f"{command[0]} exited with {proc.returncode} on generation "
                f"{generation.number}{said}",
            )

    return check


async def _tail(stream: asyncio.StreamReader | None) -> bytes:
    """The last OUTPUT_KEPT bytes of `stream` (all of it is read: the check never blocks)."""
    kept = b""
    while stream is not None and (chunk := await stream.read(65536)):
        kept = (kept + chunk)[-OUTPUT_KEPT:]
    return kept


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
