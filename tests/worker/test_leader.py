"""Leader election: each job runs on one worker at a time, and moves when its leader dies."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from powernode.db.engine import Database
from powernode.events.models import FleetEvent
from powernode.testing import POWERNODE
from powernode.worker.leader import AdvisoryLockElection, FileLockElection, lock_key


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_an_advisory_lock_has_one_holder_until_its_connection_goes(
    migrated_db_url: str,
) -> None:
    first, second = AdvisoryLockElection(migrated_db_url), AdvisoryLockElection(migrated_db_url)
    try:
        assert await first.lead("reaper")
        assert await first.lead("reaper")  # leading stays leading
        assert not await second.lead("reaper")
        assert await second.lead("reconcile")  # one lock per job
        await first.close()
        assert await second.lead("reaper")
    finally:
        await first.close()
        await second.close()


async def test_a_lock_file_has_one_holder_until_it_is_closed(tmp_path: Path) -> None:
    first, second = FileLockElection(tmp_path), FileLockElection(tmp_path)
    assert await first.lead("reaper")
    assert not await second.lead("reaper")
    await first.close()
    assert await second.lead("reaper")
    await second.close()
    assert (tmp_path / "reaper.lock").stat().st_mode & 0o777 == 0o600


def test_lock_keys_are_stable_signed_64_bit_numbers() -> None:
    assert lock_key("reaper") == lock_key("reaper") != lock_key("reconcile")
    assert -(2**63) <= lock_key("reaper") < 2**63


def start_worker(url: str, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "POWERNODE_DATABASE_URL": url,
        "POWERNODE_DATA_DIR": str(data_dir),
        "POWERNODE_JOB_SCHEDULES": json.dumps(
            {"reaper": "@every 1s", "reconcile": "off", "retention": "off"}
        ),
    }
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [POWERNODE, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def reaper_runs(url: str) -> list[dict[str, Any]]:
    db = Database(url)
    try:
        async with db.read_sessions() as session:
            rows = await session.scalars(
                select(FleetEvent).where(FleetEvent.kind == "job.reaper").order_by(FleetEvent.id)
            )
            return [{"at": e.occurred_at, **e.payload} for e in rows]
    finally:
        await db.dispose()


async def wait_for(url: str, predicate: Any, within_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within_s
    while True:
        runs = await reaper_runs(url)
        if predicate(runs) or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.2)


async def test_two_workers_never_run_a_job_at_once_and_the_survivor_takes_over(
    migrated_db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    workers = [start_worker(migrated_db_url, data_dir, tmp_path / f"w{i}.log") for i in (1, 2)]
    try:
        runs = await wait_for(migrated_db_url, lambda r: len(r) >= 4, 30)
        leaders = {r["worker"] for r in runs}
        assert len(runs) >= 4, (tmp_path / "w1.log").read_text()
        assert len(leaders) == 1, f"two workers ran the reaper: {leaders}"
        # Runs never overlap: each starts after the previous one ended.
        for before, after in itertools.pairwise(runs):
            started = after["at"].timestamp() - after["duration_s"]
            assert started >= before["at"].timestamp() - 0.001

        leader_pid = int(leaders.pop().rsplit(":", 1)[1])
        os.kill(leader_pid, signal.SIGKILL)
        killed_at = len(runs)
        runs = await wait_for(
            migrated_db_url, lambda r: any(x["worker"] != runs[0]["worker"] for x in r), 10
        )
        successors = {r["worker"] for r in runs[killed_at:]} - {runs[0]["worker"]}
        assert len(successors) == 1, "no worker took the reaper over within 10 s"
        survivor = next(w for w in workers if w.pid != leader_pid)
        assert successors == {f"{r['worker'].rsplit(':', 1)[0]}:{survivor.pid}" for r in runs[-1:]}
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
    survivor_code = [p.returncode for p in workers if p.pid != leader_pid]
    assert survivor_code == [0]
