"""The job registry: a job is a name, a default schedule, a description and one entry function.

Jobs register by declaration with `@job(...)`; later features (cloud sync, CVE feed, GitOps sync)
add a module with one decorated function and import it from `builtin_jobs()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.errors import Conflict, NotFound
from powernode.events.log import EventContext
from powernode.settings import Settings


@dataclass(frozen=True)
class JobContext:
    """What a job run gets: the database, settings, clock, and the event context whose
    events are caused by this run's `job.<name>` event."""

    db: Database
    settings: Settings
    clock: Clock
    events: EventContext


JobFn = Callable[[JobContext], Awaitable[dict[str, Any]]]
DefaultSchedule = Callable[[Settings], str]


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    default_schedule: DefaultSchedule
    run: JobFn

    def schedule_text(self, settings: Settings) -> str:
        """The configured schedule (`POWERNODE_JOB_SCHEDULES`) or the job's default."""
        return settings.job_schedules.get(self.name) or self.default_schedule(settings)


JOBS: dict[str, Job] = {}


def job(
    name: str, *, schedule: str | DefaultSchedule, description: str
) -> Callable[[JobFn], JobFn]:
    """Register the decorated coroutine as job `name` (schedule `off` disables it)."""

    def register(fn: JobFn) -> JobFn:
        if name in JOBS:
            raise Conflict(f"job {name!r} is registered twice")
        default = schedule if callable(schedule) else (lambda _s, text=schedule: text)
        JOBS[name] = Job(name=name, description=description, default_schedule=default, run=fn)
        return fn

    return register


def builtin_jobs() -> dict[str, Job]:
    """Every job shipped with powernode, registered on first call."""
    from powernode.worker.builtin import liveness, reaper, reconcile, retention  # noqa: F401

    return JOBS


def get_job(name: str) -> Job:
    jobs = builtin_jobs()
    if name not in jobs:
        raise NotFound(f"no job {name!r}; jobs: {', '.join(sorted(jobs))}")
    return jobs[name]
