"""Asyncio helpers for shutdown: race an awaitable against the agent's stop event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """The stop event fired before the awaited work finished (the work was cancelled)."""


async def until_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """The result of `work`, or Stopped (and `work` cancelled) if `stop` is set first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        stopper.cancel()
        raise
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # let it unwind (a shell task kills its processes)
    raise Stopped


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`; True if it slept the whole time, False if `stop` was set first."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):  # not wait_for: it can swallow cancels
            await stop.wait()
    except TimeoutError:
        return True
    return False
