"""Real agents as subprocesses against a real control plane over mTLS on loopback: enroll,
heartbeat, lease and complete; kill -9 mid-task; control-plane restart mid-task; failover
between two `serve` processes on one PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from powernode.testing import RunningServer, free_port, running_server

AGENT = str(Path(sys.executable).with_name("powernode-agent"))
FAST = {
    "POWERNODE_TASK_VISIBILITY_TIMEOUT_S": "5",
    "POWERNODE_HEARTBEAT_INTERVAL_S": "1",
    "POWERNODE_WORKER_IN_SERVE": "true",
    "POWERNODE_JOB_SCHEDULES": json.dumps({"reaper": "@every 1s", "liveness": "@every 1s"}),
}


def api(server: RunningServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )


def wait_until(check: Callable[[], Any], within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        time.sleep(0.2)


def seed_for(
    server: RunningServer, node: str, tmp_path: Path, urls: list[str] | None = None
) -> Path:
    with api(server) as http:
        http.post("/nodes", json={"name": node}).raise_for_status()
        seed = http.post(f"/nodes/{node}/bootstrap-tokens").json()["seed"]
    if urls is not None:
        seed["urls"] = urls
    path = tmp_path / f"{node}-seed.json"
    path.write_text(json.dumps(seed))
    return path


@contextmanager
def agent_process(state_dir: Path, seed: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    sysfs = state_dir.parent / f"{state_dir.name}-sysfs"  # an empty /sys: no cloud probes
    sysfs.mkdir(exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [AGENT, "--state-dir", str(state_dir), "--seed", str(seed), "--sysfs-root", str(sysfs)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def node_state(server: RunningServer, node: str) -> str:
    with api(server) as http:
        state: str = http.get(f"/nodes/{node}").json()["state"]
        return state


def task(server: RunningServer, task_id: str) -> dict[str, Any]:
    with api(server) as http:
        doc: dict[str, Any] = http.get(f"/tasks/{task_id}").json()
        return doc


def task_events(server: RunningServer, task_id: str) -> list[str]:
    with api(server) as http:
        items = http.get("/events", params={"subject_id": task_id, "limit": 100}).json()["items"]
        return [e["kind"] for e in items]


def test_an_agent_enrolls_heartbeats_and_runs_a_shell_task(
    migrated_db_url: str, tmp_path: Path
) -> None:
    with running_server(tmp_path / "cp", database_url=migrated_db_url, env=FAST) as server:
        seed = seed_for(server, "edge-1", tmp_path)
        with agent_process(tmp_path / "agent", seed, tmp_path / "agent.log"):
            wait_until(lambda: node_state(server, "edge-1") == "running", 20, "running")
            with api(server) as http:
                created = http.post(
                    "/tasks",
                    json={"kind": "shell", "node": "edge-1", "payload": {"argv": ["echo", "hi"]}},
                ).json()
            done = wait_until(
                lambda: (t := task(server, created["id"]))["state"] == "succeeded" and t,
                20,
                "the task to succeed",
            )
            assert done["result"]["stdout"] == "hi\n"
            assert done["result"]["exit_code"] == 0
        key = tmp_path / "agent" / "key.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        assert "BEGIN CERTIFICATE" in (tmp_path / "agent" / "cert.pem").read_text()


def test_a_killed_agent_s_task_is_requeued_and_completed_exactly_once(
    migrated_db_url: str, tmp_path: Path
) -> None:
    with running_server(tmp_path / "cp", database_url=migrated_db_url, env=FAST) as server:
        seed = seed_for(server, "edge-2", tmp_path)
        marker = tmp_path / "runs.txt"
        script = f"echo run >> {marker}; sleep 3"
        with agent_process(tmp_path / "agent", seed, tmp_path / "a1.log") as first:
            wait_until(lambda: node_state(server, "edge-2") == "running", 20, "running")
            with api(server) as http:
                created = http.post(
                    "/tasks",
                    json={
                        "kind": "shell",
                        "node": "edge-2",
                        "payload": {"argv": ["sh", "-c", script]},
                    },
                ).json()
            wait_until(lambda: marker.exists(), 20, "the task to start")
            first.send_signal(signal.SIGKILL)
            first.wait()
        # Requeued after the visibility timeout (5 s) by the reaper; a fresh agent process on
        # the same state directory takes it again.
        wait_until(lambda: task(server, created["id"])["state"] == "pending", 20, "requeue")
        with agent_process(tmp_path / "agent", seed, tmp_path / "a2.log"):
            done = wait_until(
                lambda: (t := task(server, created["id"]))["state"] == "succeeded" and t,
                30,
                "the task to succeed",
            )
        assert done["attempts"] == 2
        kinds = task_events(server, created["id"])
        assert kinds.count("task.succeed") == 1
        assert "task.expire" in kinds


def test_restarting_the_control_plane_mid_task_loses_nothing(
    migrated_db_url: str, tmp_path: Path
) -> None:
    port, node_port = free_port(), free_port()
    data = tmp_path / "cp"
    with running_server(
        data, database_url=migrated_db_url, env=FAST, port=port, node_port=node_port
    ) as server:
        seed = seed_for(server, "edge-3", tmp_path)
        token = server.token
    with agent_process(tmp_path / "agent", seed, tmp_path / "agent.log"):
        with running_server(
            data,
            database_url=migrated_db_url,
            env=FAST,
            token=token,
            port=port,
            node_port=node_port,
        ) as server:
            wait_until(lambda: node_state(server, "edge-3") == "running", 30, "running")
            with api(server) as http:
                created = http.post(
                    "/tasks",
                    json={
                        "kind": "shell",
                        "node": "edge-3",
                        "payload": {"argv": ["sh", "-c", "sleep 2; echo done"]},
                    },
                ).json()
            wait_until(lambda: task(server, created["id"])["state"] != "pending", 20, "lease")
        # The control plane is down while the task runs; it comes back on the same ports.
        time.sleep(1)
        with running_server(
            data,
            database_url=migrated_db_url,
            env=FAST,
            token=token,
            port=port,
            node_port=node_port,
        ) as server:
            done = wait_until(
                lambda: (t := task(server, created["id"]))["state"] == "succeeded" and t,
                40,
                "the task to succeed after the restart",
            )
            assert done["result"]["stdout"] == "done\n"
            assert task_events(server, created["id"]).count("task.succeed") == 1


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_agent_fails_over_to_the_second_control_plane(
    migrated_db_url: str, tmp_path: Path
) -> None:
    # Replicas share the CA through the database and need the same passphrase.
    env = {**FAST, "POWERNODE_PKI_PASSPHRASE": "replicas-share-this-passphrase"}
    with running_server(tmp_path / "b", database_url=migrated_db_url, env=env) as b:
        with running_server(
            tmp_path / "a", database_url=migrated_db_url, env=env, token=b.token
        ) as a:
            seed = seed_for(a, "edge-4", tmp_path, urls=[a.node_url, b.node_url])
            agent = agent_process(tmp_path / "agent", seed, tmp_path / "agent.log")
            proc = agent.__enter__()
            wait_until(lambda: node_state(b, "edge-4") == "running", 20, "running")
        # `a` is gone; the agent keeps heartbeating and taking tasks through `b`.
        try:
            with api(b) as http:
                created = http.post(
                    "/tasks",
                    json={"kind": "shell", "node": "edge-4", "payload": {"argv": ["true"]}},
                ).json()
            wait_until(lambda: task(b, created["id"])["state"] == "succeeded", 30, "the task via b")
            time.sleep(3)
            assert node_state(b, "edge-4") == "running"
            assert proc.poll() is None
        finally:
            agent.__exit__(None, None, None)
