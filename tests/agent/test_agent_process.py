"""The agent as a real process: `python -m powernode.agent.main` against a real HTTPS node API.

Also: what importing the agent loads (nothing of the server stack), and its idle memory.
"""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.agent.conftest import TOKEN
from tests.agent.fake_api import FakeNodeApi

SERVER_STACK = (
    "fastapi",
    "sqlalchemy",
    "pydantic",
    "pydantic_settings",
    "alembic",
    "uvicorn",
    "typer",
    "rich",
    "starlette",
    "click",
)
IDLE_RSS_LIMIT_KIB = 35 * 1024


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def test_importing_the_agent_loads_nothing_of_the_server_stack() -> None:
    """A fresh interpreter importing the agent's entry point and runner loads no server library."""
    code = (
        "import sys, json\n"
        "import powernode.agent.main, powernode.agent.runner\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = json.loads(out.stdout)
    leaked = sorted(m for m in loaded if m.split(".")[0] in SERVER_STACK)
    assert leaked == []
    assert "cryptography" not in {m.split(".")[0] for m in loaded}  # only in the keygen child


def test_the_agent_process_enrolls_runs_a_task_and_stops_on_sigterm(
    node_api: FakeNodeApi, tmp_path: Path, write_seed: Callable[[dict[str, Any]], Path]
) -> None:
    """Enroll, run a shell task, report it, idle within the memory budget, exit 0 on SIGTERM."""
    task_id = node_api.add_task("shell", {"argv": ["echo", "$(id)"], "timeout_s": 30, "env": {}})
    seed = write_seed(node_api.seed(TOKEN))
    (tmp_path / "sys").mkdir()
    state = tmp_path / "state"
    log = (tmp_path / "agent.log").open("wb")
    argv = [
        sys.executable,
        "-m",
        "powernode.agent.main",
        "--state-dir",
        str(state),
        "--seed",
        str(seed),
        "--sysfs-root",
        str(tmp_path / "sys"),
        "--shutdown-grace",
        "3",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    try:
        (done,) = node_api.wait_for("completions", timeout=30)
        assert (done["task_id"], done["outcome"]) == (task_id, "succeeded")
        assert done["result"]["stdout"] == "$(id)\n"
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
        assert modes["key.pem"] == modes["seed.json"] == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700

        time.sleep(2.0)  # idle: long-polling and heartbeating
        rss = _rss_kib(proc.pid)
        print(f"agent idle RSS: {rss} KiB")
        assert rss <= IDLE_RSS_LIMIT_KIB, f"idle RSS {rss} KiB is over {IDLE_RSS_LIMIT_KIB} KiB"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "agent.log").read_text().splitlines()]
    messages = [line["msg"] for line in lines]
    assert {"enrolled", "task reported", "stop requested", "stopped"} <= set(messages)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)


def test_version_and_usage() -> None:
    """--version prints the version; a missing --state-dir is a usage error (exit 2)."""
    run = [sys.executable, "-m", "powernode.agent.main"]
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0
    assert version.stdout.startswith("powernode-agent ")
    usage = subprocess.run(run, capture_output=True, text=True, check=False)
    assert usage.returncode == 2
    assert "--state-dir" in usage.stderr


def test_once_without_a_seed_exits_with_the_invalid_input_code(tmp_path: Path) -> None:
    """--once with no seed anywhere fails fast with exit 65 and a JSON log line saying why."""
    (tmp_path / "sys").mkdir()
    argv = [
        sys.executable,
        "-m",
        "powernode.agent.main",
        "--state-dir",
        str(tmp_path / "s"),
        "--sysfs-root",
        str(tmp_path / "sys"),
        "--once",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 65, proc.stderr
    last = json.loads(proc.stderr.strip().splitlines()[-1])
    assert last["msg"] == "agent failed"
    assert "no identity source provided a seed" in last["error"]
