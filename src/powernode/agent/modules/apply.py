"""Apply a set of modules: pull, verify, build a generation, switch to it, post-check, prune.

Contract: the active root (`<state>/modules/current/root`) changes only by the atomic switch
of `current`, and only to a generation whose every module was verified (`verify`) and whose
root was built and sealed (`activate`). Any failure before the switch deletes the new
generation and leaves the active one exactly as it was; a failed post-check switches back to
the previous generation (`rollback`). On success, generations older than the previous one are
pruned. One apply runs at a time per state directory (`Generations.lock`, else `Busy`).

Modules are pulled and verified one after the other, each layer extracted while it downloads.
Blocking file work runs in worker threads; the pulls are async. Cancellation (the agent
abandoning the task) waits for the thread step in progress to finish, so the lock is never
released while a thread still changes the directory; a generation switched to but never
post-checked is rolled back; one built but never switched to is removed by the next apply.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from powernode.agent.modules.activate import ActivationOptions, ensure_mounted, make_root, seal
from powernode.agent.modules.errors import ActivationFailed, ModuleApplyError, PostCheckFailed
from powernode.agent.modules.generations import (
    MATERIALIZED,
    Generation,
    Generations,
    ModuleRecord,
    remove_tree,
)
from powernode.agent.modules.postcheck import PostCheck, command_check
from powernode.agent.modules.pull import NodeTls, pull_module
from powernode.agent.modules.request import ApplyRequest
from powernode.agent.modules.rollback import roll_back
from powernode.agent.modules.stream import in_thread
from powernode.agent.modules.verify import Limits, VerifiedModule, verify_and_extract


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class ApplyOptions:
    """Node-side settings of applying modules (the payload says what, these say how)."""

    activation: ActivationOptions = field(default_factory=ActivationOptions)
    limits: Limits = field(default_factory=Limits)
    node: NodeTls | None = None
    """The node's mutual TLS context for the control plane's registry."""
    clock: Callable[[], dt.datetime] = _utcnow
    """The time signatures and certificates are checked at."""


@dataclass(frozen=True)
class ApplyResult:
    """What is active after an apply (or after its failure)."""

    active: dict[str, str]
    generation: int | None
    rolled_back: bool
    verity: str | None
    mode: str | None
    root: str
    lowers: str | None = None
    """An overlay root's lower layers: "erofs" (mounted images) or "directories"."""

    def document(self) -> dict[str, Any]:
        """The task result: {"active", "generation", "rolled_back", "verity", "mode", "lowers",
        "root"}."""
        return {
            "active": dict(self.active),
            "generation": self.generation,
            "rolled_back": self.rolled_back,
            "verity": self.verity,
            "mode": self.mode,
            "lowers": self.lowers,
            "root": self.root,
        }


def active_state(state_dir: Path, *, rolled_back: bool = False) -> ApplyResult:
    """What is active now (no lock needed: `current` only ever changes atomically)."""
    generations = Generations(state_dir)
    return _result(generations, generations.current(), rolled_back=rolled_back)


async def apply_modules(
    state_dir: Path,
    request: ApplyRequest,
    options: ApplyOptions | None = None,
    *,
    post_check: PostCheck | None = None,
) -> ApplyResult:
    """Make `request.modules` the active root; see the module docstring.

    Raises a `ModuleApplyError` naming the module, the stage and the cause. Without an explicit
    `post_check`, the request's `post_check` argv (if any) is run.
    """
    options = options or ApplyOptions()
    if post_check is None and request.post_check is not None:
        post_check = command_check(request.post_check, request.post_check_timeout_s)
    generations = Generations(state_dir)
    with generations.lock():
        await in_thread(_prepare, generations, options.activation)
        staging = await in_thread(generations.new_staging)
        try:
            return await _apply(generations, staging, request, options, post_check)
        finally:
            await in_thread(remove_tree, staging)


def _prepare(generations: Generations, options: ActivationOptions) -> None:
    try:
        generations.recover()
        ensure_mounted(generations, options)
    except OSError as exc:
        raise ActivationFailed(None, f"cannot use {generations.base}: {exc}") from exc


async def _apply(
    generations: Generations,
    staging: Path,
    request: ApplyRequest,
    options: ApplyOptions,
    post_check: PostCheck | None,
) -> ApplyResult:
    generation = await _build(generations, staging, request, options)
    try:
        await in_thread(generations.switch, generation)
    except OSError as exc:
        await in_thread(generations.remove, generation.path)
        raise ActivationFailed(
            None, f"cannot switch to generation {generation.number}: {exc}"
        ) from exc
    except asyncio.CancelledError:
        if post_check is not None:  # switched to, and now never checked
            await in_thread(roll_back, generations, generation, options.activation)
        raise
    if post_check is not None:
        try:
            await post_check(generation, generations.active_root)
        except (Exception, asyncio.CancelledError) as exc:
            # Unchecked is not accepted: a crashed or abandoned check rolls back too.
            await in_thread(roll_back, generations, generation, options.activation)
            if isinstance(exc, PostCheckFailed | asyncio.CancelledError):
                raise
            if isinstance(exc, ModuleApplyError):
                raise PostCheckFailed(exc.module, exc.cause, exc.reasons) from exc
            raise PostCheckFailed(None, f"the post-check crashed: {exc!r}") from exc
    await in_thread(generations.prune)
    return _result(generations, generation, rolled_back=False)


async def _build(
    generations: Generations, staging: Path, request: ApplyRequest, options: ApplyOptions
) -> Generation:
    """Pull and verify every module into a new generation and make its root; deleted on any
    failure."""
    try:
        number, path = await in_thread(generations.new)
    except OSError as exc:
        raise ActivationFailed(None, f"cannot create a generation: {exc}") from exc
    try:
        now = options.clock()
        verified, records = [], []
        for index, module in enumerate(request.modules):
            name = f"{index:02d}-{module.name}"
            tree = f"trees/{name}"
            async with pull_module(
                module, staging / name, insecure=request.insecure, node=options.node
            ) as pulled:
                checked = await verify_and_extract(
                    module, pulled, path / tree, now=now, limits=options.limits
                )
            verified.append(checked)
            records.append(ModuleRecord(module.name, module.version, module.digest, tree))
        return await in_thread(_activate, generations, number, path, records, verified, options)
    except BaseException as exc:
        await in_thread(generations.remove, path)
        if isinstance(exc, OSError):
            raise ActivationFailed(None, f"cannot build generation {number}: {exc}") from exc
        raise


def _activate(
    generations: Generations,
    number: int,
    path: Path,
    records: list[ModuleRecord],
    verified: list[VerifiedModule],
    options: ApplyOptions,
) -> Generation:
    """Seal the verified trees, make the root and write the record."""
    verity = seal(path, verified)
    built = make_root(
        Generation(number, path, tuple(records), MATERIALIZED, verity), options.activation
    )
    generations.commit(built)
    return built


def _result(
    generations: Generations, generation: Generation | None, *, rolled_back: bool
) -> ApplyResult:
    if generation is None:
        return ApplyResult({}, None, rolled_back, None, None, str(generations.active_root))
    return ApplyResult(
        generation.active,
        generation.number,
        rolled_back,
        generation.verity,
        generation.mode,
        str(generations.active_root),
        generation.lowers,
    )
