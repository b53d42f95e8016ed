"""Local nodes from the CLI: `node create --provider local` starts a real agent that enrolls and
goes running; stop/start/terminate act on its process; it survives a control-plane restart."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from powernode.testing import free_port, running_server

from .harness import Cli

FAST = {
    "POWERNODE_HEARTBEAT_INTERVAL_S": "1",
    "POWERNODE_JOB_SCHEDULES": json.dumps({"liveness": "@every 1s"}),
}


def wait_until(check: Callable[[], Any], within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def test_a_local_node_lives_through_stop_start_restart_and_terminate(tmp_path: Path) -> None:
    port, node_port = free_port(), free_port()
    data = tmp_path / "cp"
    with running_server(data, env=FAST, port=port, node_port=node_port) as server:
        cli = Cli.for_server(server)
        created = cli.json("node", "create", "web-1", "--provider", "local")
        assert created["state"] == "provisioning"

        def state() -> str:
            value: str = cli.json("node", "show", "web-1")["state"]
            return value

        wait_until(lambda: state() == "running", 30, "the local node to run")
        node_dir = data / "nodes" / created["id"]
        assert (node_dir / "seed.json").stat().st_mode & 0o777 == 0o600
        assert (node_dir / "agent" / "key.pem").stat().st_mode & 0o777 == 0o600
        pid = int((node_dir / "agent.pid").read_text())
        assert alive(pid)

        token = cli.run("node", "token", "web-1").stdout.strip()
        assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token)
        certs = cli.json("node", "certs", "web-1")
        assert len(certs) == 1
        assert certs[0]["revoked_at"] is None

        cli.run("node", "action", "web-1", "stop")
        wait_until(lambda: not alive(pid), 20, "the agent to stop")
        assert state() == "stopped"
        cli.run("node", "action", "web-1", "start")
        wait_until(lambda: state() == "running", 30, "running again after start")
        pid = int((node_dir / "agent.pid").read_text())
        token_ = server.token
    # The control plane goes away and comes back; the agent keeps running meanwhile.
    assert alive(pid)
    with running_server(data, env=FAST, token=token_, port=port, node_port=node_port) as server:
        cli = Cli.for_server(server)
        time.sleep(5)  # several liveness runs: the node must not go unreachable
        assert state() == "running"
        assert alive(pid)
        cli.run("node", "action", "web-1", "terminate")
        wait_until(lambda: not alive(pid), 20, "the agent to be gone")
        assert state() == "terminated"
        assert all(c["revoked_at"] for c in cli.json("node", "certs", "web-1"))
        assert not (node_dir / "agent").exists()
        kinds = [
            e["kind"]
            for e in cli.json("events", "list", "--subject", created["id"], "--limit", "200")
        ]
        assert "node.enrolled" in kinds
        assert "node.certificates_revoked" in kinds
