"""The lease loop: long-poll for a task, run it, keep its lease alive, report it. One at a time.

While a task runs, `progress` is posted every third of its visibility timeout (which extends the
lease). A 409 or 404 on progress means the lease was lost (it expired and the task was requeued):
the task is cancelled and nothing is reported. Completion carries the lease's epoch; a 409 there
is logged and the result dropped.

Shutdown contract: once `stop` is set no task is leased; the running task gets `grace_s` seconds
(counted from the moment the worker notices the stop) to finish and be reported, then it is
cancelled (a shell task's process group is killed) and left for the server to requeue when its
lease expires. Post-completion actions (a reboot after its delay) are cancelled by the stop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from powernode.agent.aio import Stopped, sleep_unless_stopped, until_stopped
from powernode.agent.backoff import Backoff
from powernode.agent.client import Lease
from powernode.agent.errors import AgentError, CertificateRejected, StaleLease, TaskGone
from powernode.agent.executors import (
    AgentControl,
    Executor,
    Outcome,
    PowerSettings,
    TaskContext,
    execute,
)
from powernode.agent.session import Session

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_PROGRESS_S = 1.0


class Worker:
    """Leases and runs tasks for one session."""

    def __init__(
        self,
        session: Session,
        executors: dict[str, Executor],
        control: AgentControl,
        stop: asyncio.Event,
        *,
        power: PowerSettings,
        lease_wait_s: int,
        grace_s: float,
        state_dir: Path | None = None,
    ) -> None:
        self._state_dir = state_dir
        self._session = session
        self._executors = executors
        self.control = control
        self._stop = stop
        self._power = power
        self._lease_wait_s = lease_wait_s
        self._grace_s = grace_s
        self._deadline: float | None = None
        self.current: str | None = None
        """The id of the task running now, for heartbeats."""

    async def run(self, *, once: bool = False) -> None:
        """Lease and run tasks until stopped or draining (`once`: at most one lease call)."""
        backoff = Backoff()
        while not self._stop.is_set() and not self.control.draining:
            try:
                lease = await until_stopped(
                    self._stop, self._session.client.lease(self._lease_wait_s)
                )
            except Stopped:
                return
            except CertificateRejected as exc:
                if once:
                    raise
                await self._wait_for_credentials(exc)
                continue
            except AgentError as exc:
                if once:
                    raise
                delay = backoff.next_delay()
                log.warning("lease failed", extra={"error": str(exc), "retry_in_s": delay})
                await sleep_unless_stopped(self._stop, delay)
                continue
            backoff.reset()
            if lease is not None:
                await self._run(lease)
            if once:
                return
        if self.control.draining and not self._stop.is_set():
            log.warning("draining: no more tasks will be leased until the agent restarts")

    async def _wait_for_credentials(self, exc: CertificateRejected) -> None:
        self._session.reject(exc)
        try:
            await until_stopped(self._stop, self._session.wait_changed())
        except Stopped:
            return

    async def _run(self, lease: Lease) -> None:
        fields = {"task_id": lease.id, "kind": lease.kind, "epoch": lease.epoch}
        log.info("task leased", extra={**fields, "attempt": lease.attempt})
        context = TaskContext(
            lease.id, lease.kind, lease.attempt, self.control, self._power, self._state_dir
        )
        work = asyncio.create_task(execute(self._executors, lease.kind, lease.payload, context))
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(lease, work, lost))
        self.current = lease.id
        started = time.monotonic()
        try:
            outcome = await self._within_grace(work)
        except Stopped:
            log.warning("shutting down: task abandoned; the server will requeue it", extra=fields)
            return
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if lost.is_set() and (me is None or not me.cancelling()):
                return  # the keeper cancelled the work: the lease was lost
            raise
        finally:
            keeper.cancel()
            self.current = None
        duration = round(time.monotonic() - started, 3)
        log.info(
            "task finished", extra={**fields, "outcome": outcome.outcome, "duration_s": duration}
        )
        if await self._report(lease, outcome):
            for action in context.after_complete:
                try:
                    await until_stopped(self._stop, action())
                except Stopped:
                    log.warning("shutting down: post-completion action cancelled", extra=fields)
                    return
                except Exception:
                    log.exception("post-completion action failed", extra=fields)

    async def _report(self, lease: Lease, outcome: Outcome) -> bool:
        """Post the completion; whether the server took it."""
        fields = {"task_id": lease.id, "epoch": lease.epoch}
        while True:
            try:
                state = await self._within_grace(
                    self._session.client.complete(
                        lease.id, lease.epoch, outcome.outcome, outcome.result
                    )
                )
            except Stopped:
                log.warning("shutting down: completion not delivered", extra=fields)
                return False
            except (StaleLease, TaskGone) as exc:
                log.warning(
                    "lease lost before completion; result dropped",
                    extra={**fields, "error": str(exc)},
                )
                return False
            except CertificateRejected as exc:
                await self._wait_for_credentials(exc)
                if self._stop.is_set():
                    return False
                continue
            except AgentError as exc:
                log.error("completion refused; result dropped", extra={**fields, "error": str(exc)})
                return False
            log.info("task reported", extra={**fields, "state": state})
            return True

    async def _within_grace(self, work: Awaitable[T]) -> T:
        """`work`'s result; once stop is set it has what is left of the grace period."""
        task = asyncio.ensure_future(work)
        try:
            # Shielded: the stop must not cancel the work before its grace period is over.
            return await until_stopped(self._stop, asyncio.shield(task))
        except Stopped:
            pass
        except asyncio.CancelledError:
            task.cancel()
            raise
        if self._deadline is None:
            self._deadline = time.monotonic() + self._grace_s
            log.info("stopping: waiting for the current task", extra={"grace_s": self._grace_s})
        await asyncio.wait({task}, timeout=max(0.0, self._deadline - time.monotonic()))
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        raise Stopped

    async def _keep_lease(
        self, lease: Lease, work: asyncio.Task[Outcome], lost: asyncio.Event
    ) -> None:
        period = max(MIN_PROGRESS_S, lease.visibility_timeout_s / 3)
        started = time.monotonic()
        fields = {"task_id": lease.id, "epoch": lease.epoch}
        while not work.done():
            await asyncio.sleep(period)
            message = f"running for {int(time.monotonic() - started)} s"
            try:
                await self._session.client.progress(lease.id, lease.epoch, message, rounds=1)
            except (StaleLease, TaskGone) as exc:
                log.warning(
                    "lease lost while running; task cancelled", extra={**fields, "error": str(exc)}
                )
                lost.set()
                work.cancel()
                return
            except CertificateRejected as exc:
                self._session.reject(exc)
            except AgentError as exc:
                log.warning("progress not delivered", extra={**fields, "error": str(exc)})
