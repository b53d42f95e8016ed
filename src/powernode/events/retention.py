"""Retention tiers for the fleet event log: routine events kept 90 days, critical 365 (both
configurable), deleted in bounded batches.

Each batch is its own short transaction (`DELETE ... WHERE id IN (SELECT id ... LIMIT n)`), so
writers never wait long behind retention, on SQLite (one writer at a time) or PostgreSQL (row
locks only on the batch). A run records one `job.retention` fleet event with its duration and
what it deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

from sqlalchemy import delete, select

from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.events.log import EventContext, Severity, record_event
from powernode.events.models import FleetEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    routine_days: int = 90
    critical_days: int = 365
    batch: int = 5000

    def tiers(self) -> dict[Severity, dt.timedelta]:
        return {
            Severity.ROUTINE: dt.timedelta(days=self.routine_days),
            Severity.CRITICAL: dt.timedelta(days=self.critical_days),
        }


async def prune_events(db: Database, clock: Clock, policy: RetentionPolicy) -> dict[str, int]:
    """Delete every event older than its tier allows; returns how many per severity."""
    now = clock.now()
    deleted: dict[str, int] = {}
    for severity, keep in policy.tiers().items():
        cutoff = now - keep
        total = 0
        while True:
            expired = (
                select(FleetEvent.id)
                .where(FleetEvent.severity == str(severity), FleetEvent.occurred_at < cutoff)
                .limit(policy.batch)
            )
            async with db.transaction() as session:
                result = await session.execute(
                    delete(FleetEvent).where(FleetEvent.id.in_(expired.scalar_subquery()))
                )
            count = int(getattr(result, "rowcount", 0) or 0)
            total += count
            if count < policy.batch:
                break
            await asyncio.sleep(0)  # let other work in this process run between batches
        deleted[str(severity)] = total
    return deleted


async def run_retention(db: Database, clock: Clock, policy: RetentionPolicy) -> dict[str, int]:
    """One job run: prune, then record a `job.retention` event with outcome and duration."""
    started = time.perf_counter()
    payload: dict[str, object] = {
        "routine_days": policy.routine_days,
        "critical_days": policy.critical_days,
    }
    deleted: dict[str, int] = {}
    try:
        deleted = await prune_events(db, clock, policy)
        payload.update(outcome="succeeded", deleted=deleted)
    except Exception as exc:
        payload.update(outcome="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        payload["duration_s"] = round(time.perf_counter() - started, 3)
        failed = payload["outcome"] != "succeeded"
        async with db.transaction() as session:
            await record_event(
                session,
                EventContext(actor="job:retention", clock=clock),
                kind="job.retention",
                subject_type="job",
                subject_id=None,
                severity=Severity.CRITICAL if failed else Severity.ROUTINE,
                payload=payload,
            )
    return deleted


async def run_periodically(
    db: Database, clock: Clock, policy: RetentionPolicy, interval_s: float
) -> None:
    """Every `interval_s` seconds, a retention run, until cancelled (the embedded default runs
    it inside `serve`; the worker issue moves it to `powernode worker` with leader election)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            log.info("retention deleted %s", await run_retention(db, clock, policy))
        except asyncio.CancelledError:
            raise
        except Exception:  # recorded as a failed run; later runs go on
            log.exception("retention run failed")
