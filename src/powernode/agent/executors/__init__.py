"""Task executors, one module per task kind, registered by declaration.

An executor module (any module of this package whose name does not start with `_`) has a short
docstring, a `meta = ExecutorMeta(kind=...)` and one entry point

    async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]

which returns the task's result (the task succeeded) or raises TaskFailed (failed, with a
result) or PayloadError (failed: the payload does not fit the kind). Adding a kind is adding a
module. `execute()` turns every outcome, including an unknown kind or an executor's crash, into
an `Outcome` the runner reports; only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, cast

from powernode.agent.errors import PayloadError, TaskFailed

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], "TaskContext"], Awaitable[dict[str, Any]]]
AfterComplete = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ExecutorMeta:
    """What an executor module declares about itself."""

    kind: str


@dataclass(frozen=True)
class Executor:
    """A registered executor: its kind, its one-line summary and its entry point."""

    kind: str
    summary: str
    handle: Handler


@dataclass
class AgentControl:
    """What executors may change about the agent itself."""

    draining: bool = False
    """Set: lease no new task once the current one is done (heartbeats go on)."""

    def drain(self) -> None:
        """Stop leasing new tasks after the current one."""
        self.draining = True


@dataclass(frozen=True)
class PowerSettings:
    """The commands the reboot and shutdown executors run."""

    reboot: tuple[str, ...] = ("systemctl", "reboot")
    shutdown: tuple[str, ...] = ("systemctl", "poweroff")


@dataclass
class TaskContext:
    """What an executor gets besides its payload."""

    task_id: str
    kind: str
    attempt: int
    control: AgentControl
    power: PowerSettings = field(default_factory=PowerSettings)
    state_dir: Path | None = None
    """The agent's state directory (apply_modules keeps its generations under it)."""
    after_complete: list[AfterComplete] = field(default_factory=list)
    """Actions the runner runs once the completion has been posted (a reboot, say)."""


@dataclass(frozen=True)
class Outcome:
    """What to report for a task."""

    outcome: Literal["succeeded", "failed"]
    result: dict[str, Any]


def _is_handler(value: object) -> bool:
    return asyncio.iscoroutinefunction(value)


def load(package: ModuleType | None = None) -> dict[str, Executor]:
    """Every executor module of `package` (default: this package), by kind."""
    package = package or importlib.import_module(__name__)
    found: dict[str, Executor] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        meta, handle = getattr(module, "meta", None), getattr(module, "handle", None)
        if not isinstance(meta, ExecutorMeta) or not _is_handler(handle):
            raise TypeError(f"executor module {module.__name__} lacks meta or async handle()")
        if meta.kind in found:
            raise ValueError(f"task kind {meta.kind!r} has two executors")
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        found[meta.kind] = Executor(meta.kind, summary, cast(Handler, handle))
    return found


async def execute(
    executors: dict[str, Executor], kind: str, payload: dict[str, Any], context: TaskContext
) -> Outcome:
    """Run the task with its kind's executor and say how it went."""
    executor = executors.get(kind)
    if executor is None:
        known = ", ".join(sorted(executors)) or "none"
        return Outcome("failed", {"error": f"unknown task kind {kind!r}; this agent runs: {known}"})
    try:
        return Outcome("succeeded", await executor.handle(payload, context))
    except TaskFailed as exc:
        return Outcome("failed", {**exc.result, "error": exc.detail})
    except PayloadError as exc:
        return Outcome("failed", {"error": f"invalid {kind} payload: {exc.detail}"})
    except Exception as exc:
        log.exception("executor crashed", extra={"task_id": context.task_id, "kind": kind})
        return Outcome("failed", {"error": f"{kind} executor crashed: {type(exc).__name__}: {exc}"})
