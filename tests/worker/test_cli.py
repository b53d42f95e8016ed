"""`powernode worker` from the command line: list, one run, and a bad schedule refused."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from powernode.testing import POWERNODE


def worker(
    tmp_path: Path, *args: str, schedules: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POWERNODE_DATA_DIR": str(tmp_path)}
    env.pop("POWERNODE_DATABASE_URL", None)
    if schedules is not None:
        env["POWERNODE_JOB_SCHEDULES"] = json.dumps(schedules)
    subprocess.run([POWERNODE, "init"], env=env, check=True, capture_output=True)
    return subprocess.run(
        [POWERNODE, "worker", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_list_shows_every_job_with_its_schedule(tmp_path: Path) -> None:
    result = worker(tmp_path, "--list", "-o", "json", schedules={"reaper": "@every 9s"})
    assert result.returncode == 0, result.stderr
    jobs = {job["name"]: job for job in json.loads(result.stdout)}
    assert set(jobs) >= {"reaper", "reconcile", "retention"}
    assert jobs["reaper"]["schedule"] == "@every 9s"
    table = worker(tmp_path, "--list", schedules={"reaper": "@every 9s"}).stdout
    assert "reaper" in table
    assert "@every 9s" in table


def test_once_runs_one_job_and_records_it(tmp_path: Path) -> None:
    result = worker(tmp_path, "--once", "retention")
    assert result.returncode == 0, result.stderr
    assert "job retention: succeeded" in result.stderr


def test_an_unknown_job_and_a_bad_schedule_are_refused(tmp_path: Path) -> None:
    unknown = worker(tmp_path, "--once", "nope")
    assert unknown.returncode != 0
    assert "no job 'nope'" in unknown.stderr
    bad = worker(tmp_path, schedules={"reaper": "every so often"})
    assert bad.returncode == 2
    assert "schedule 'every so often' is not valid" in bad.stderr
