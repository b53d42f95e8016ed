"""`powernode worker`: the scheduled jobs, one leader per job (talks to the database directly)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Annotated

import typer

from powernode.cli.common import OutputOption, state
from powernode.cli.output import OutputFormat, emit


def worker(
    ctx: typer.Context,
    once: Annotated[
        str | None, typer.Option(help="Run this one job now (no leader election) and exit.")
    ] = None,
    list_jobs: Annotated[
        bool, typer.Option("--list", help="List the jobs and their schedules, then exit.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Run scheduled jobs: task reaper, fleet reconcile, event retention and any registered.

    With several workers on one PostgreSQL each job runs on exactly one of them at a time.
    Schedules: POWERNODE_JOB_SCHEDULES='{"retention": "@daily"}' ('off' disables a job).
    """
    from powernode.clock import SystemClock
    from powernode.db.engine import Database
    from powernode.db.migrate import check_at_head
    from powernode.worker.jobs import builtin_jobs, get_job
    from powernode.worker.leader import election_for
    from powernode.worker.runner import Worker

    settings = state(ctx).settings()
    if list_jobs:
        rows = [
            {
                "name": job.name,
                "schedule": job.schedule_text(settings),
                "description": job.description,
            }
            for job in builtin_jobs().values()
        ]
        emit(rows, output, columns=("name", "schedule", "description"))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = settings.effective_database_url
    asyncio.run(check_at_head(url))

    async def main() -> None:
        db = Database(url, pool_size=settings.db_pool_size)
        runner = Worker(db, settings, SystemClock(), election_for(url, settings.data_dir))
        try:
            if once is not None:
                await runner.run_once(get_job(once))
                return
            runner.scheduled()  # refuse a bad schedule before starting anything
            task = asyncio.create_task(runner.run_forever())
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await db.dispose()

    asyncio.run(main())
