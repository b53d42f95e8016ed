"""Event retention: delete fleet events past their tier's age, in bounded batches."""

from __future__ import annotations

from typing import Any

from powernode.events.retention import RetentionPolicy, prune_events
from powernode.settings import Settings
from powernode.worker.jobs import JobContext, job


def _default(settings: Settings) -> str:
    interval = settings.retention_interval_s
    return f"@every {interval}s" if interval > 0 else "off"


@job("retention", schedule=_default, description="Delete expired routine and critical events.")
async def retention(jc: JobContext) -> dict[str, Any]:
    policy = RetentionPolicy(
        jc.settings.retention_routine_days,
        jc.settings.retention_critical_days,
        jc.settings.retention_batch,
    )
    deleted = await prune_events(jc.db, jc.clock, policy)
    return {
        "routine_days": policy.routine_days,
        "critical_days": policy.critical_days,
        "deleted": deleted,
    }
