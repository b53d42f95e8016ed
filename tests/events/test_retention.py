"""Retention deletes exactly the expired events of each tier, in bounded batches, and records
each run as a fleet event."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import select

from powernode.api.app import create_app
from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.log import EventContext, Severity, record_event
from powernode.events.models import FleetEvent
from powernode.events.retention import RetentionPolicy, prune_events
from powernode.settings import Settings
from powernode.worker.jobs import get_job
from powernode.worker.leader import FileLockElection
from powernode.worker.runner import Worker

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


async def run_retention_job(db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=db.url)
    worker = Worker(db, settings, FrozenClock(NOW), FileLockElection(tmp_path / "locks"))
    await worker.run_once(get_job("retention"))


async def test_each_tier_loses_exactly_its_expired_events(database: Database) -> None:
    ages = {  # days old -> which tiers have expired
        1: (),
        89: (),
        91: ("routine",),
        364: ("routine",),
        366: ("routine", "critical"),
    }
    kept: set[str] = set()
    async with database.transaction() as session:
        for days, expired in ages.items():
            clock = FrozenClock(NOW - dt.timedelta(days=days))
            ctx = EventContext(actor="test", clock=clock)
            for severity in Severity:
                for n in range(3):
                    await record_event(
                        session,
                        ctx,
                        kind=f"test.{days}.{n}",
                        subject_type="test",
                        subject_id=None,
                        severity=severity,
                    )
                    if str(severity) not in expired:
                        kept.add(f"test.{days}.{n}/{severity}")
    policy = RetentionPolicy(routine_days=90, critical_days=365, batch=2)  # several batches
    deleted = await prune_events(database, FrozenClock(NOW), policy)
    assert deleted == {"routine": 9, "critical": 3}
    async with database.read_sessions() as session:
        rows = (await session.execute(select(FleetEvent.kind, FleetEvent.severity))).all()
    remaining = {f"{kind}/{severity}" for kind, severity in rows if kind.startswith("test.")}
    assert remaining == kept


async def test_a_run_is_recorded_with_outcome_and_duration(
    database: Database, tmp_path: Path
) -> None:
    await run_retention_job(database, tmp_path)
    async with database.read_sessions() as session:
        event = await session.scalar(select(FleetEvent).where(FleetEvent.kind == "job.retention"))
    assert event is not None
    assert event.payload["outcome"] == "succeeded"
    assert event.payload["deleted"] == {"routine": 0, "critical": 0}
    assert event.payload["duration_s"] >= 0
    assert event.actor == "job:retention"


async def test_serve_runs_retention_on_its_interval(migrated_db_url: str, tmp_path: Path) -> None:
    """In the embedded default the job runs inside `serve` (here: every second)."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=migrated_db_url,
        retention_interval_s=1,
        worker_in_serve=True,
    )
    app = create_app(settings, clock=FrozenClock(NOW))
    async with app.router.lifespan_context(app):
        db: Database = app.state.db
        for _ in range(50):
            await asyncio.sleep(0.1)
            async with db.read_sessions() as session:
                run = await session.scalar(
                    select(FleetEvent.id).where(FleetEvent.kind == "job.retention")
                )
            if run is not None:
                break
        assert run is not None
