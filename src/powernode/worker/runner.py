"""Running jobs on their schedules, one leader per job.

Each job has its own loop: sleep until the next scheduled time, ask the election whether this
worker leads the job, and if so run it. Followers ask again at every scheduled time, so when a
leader dies its jobs move within one schedule period. Every run is one `job.<name>` fleet event
(outcome, duration, worker, what the job returned); the events a run causes carry its
correlation id and name the run event as their cause.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.events.log import EventContext, Severity, record_event
from powernode.ids import new_id
from powernode.settings import Settings
from powernode.worker.jobs import Job, JobContext, builtin_jobs
from powernode.worker.leader import Election
from powernode.worker.schedule import Schedule, parse_schedule

log = logging.getLogger(__name__)

OFF = "off"


@dataclass
class ScheduledJob:
    job: Job
    schedule: Schedule


@dataclass
class Worker:
    """Runs the enabled jobs until cancelled (see the module docstring)."""

    db: Database
    settings: Settings
    clock: Clock
    election: Election
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    jobs: dict[str, Job] | None = None

    def scheduled(self) -> list[ScheduledJob]:
        """Every enabled job with its parsed schedule (a bad schedule is an error at start)."""
        jobs = self.jobs if self.jobs is not None else builtin_jobs()
        out = []
        for job in jobs.values():
            text = job.schedule_text(self.settings)
            if text.strip() == OFF:
                continue
            out.append(ScheduledJob(job, parse_schedule(text)))
        return out

    async def run_forever(self) -> None:
        plan = self.scheduled()
        log.info(
            "worker %s: %s",
            self.name,
            ", ".join(f"{s.job.name} ({s.schedule.text})" for s in plan) or "no jobs",
        )
        try:
            async with asyncio.TaskGroup() as group:
                for item in plan:
                    group.create_task(self._loop(item), name=f"job-{item.job.name}")
        finally:
            await self.election.close()

    async def _loop(self, item: ScheduledJob) -> None:
        next_at = item.schedule.next_after(dt.datetime.now(dt.UTC))
        while True:
            await asyncio.sleep(max(0.0, (next_at - dt.datetime.now(dt.UTC)).total_seconds()))
            try:
                if await self.election.lead(item.job.name):
                    await self.run_once(item.job, item.schedule.text)
            except asyncio.CancelledError:
                raise
            except Exception:  # recorded as a failed run where possible; the loop goes on
                log.exception("job %s: run failed", item.job.name)
            next_at = item.schedule.next_after(max(next_at, dt.datetime.now(dt.UTC)))

    async def run_once(self, job: Job, schedule: str = "manual") -> uuid.UUID:
        """One run of `job`, recorded as a `job.<name>` event; returns that event's id."""
        run_id = new_id()
        ctx = EventContext(actor=f"job:{job.name}", clock=self.clock)
        started = time.perf_counter()
        payload: dict[str, Any] = {"worker": self.name, "schedule": schedule}
        try:
            result = await job.run(
                JobContext(self.db, self.settings, self.clock, ctx.caused_by(run_id))
            )
            payload.update(outcome="succeeded", **result)
        except Exception as exc:
            payload.update(outcome="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            payload["duration_s"] = round(time.perf_counter() - started, 3)
            failed = payload["outcome"] != "succeeded"
            async with self.db.transaction() as session:
                await record_event(
                    session,
                    ctx,
                    kind=f"job.{job.name}",
                    subject_type="job",
                    subject_id=None,
                    severity=Severity.CRITICAL if failed else Severity.ROUTINE,
                    payload=payload,
                    event_id=run_id,
                )
            log.info("job %s: %s in %.3fs", job.name, payload["outcome"], payload["duration_s"])
        return run_id
