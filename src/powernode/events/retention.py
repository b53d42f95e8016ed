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
from dataclasses import dataclass

from sqlalchemy import delete, select

from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.events.log import Severity
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
