"""Qemu nodes through the API and the CLI with the recorder runner: create provisions, stop,
start and terminate map onto the driver, a missing artifact fails the node with the reason, the
disabled runner says how to enable it, and the console log reads through the API and the CLI."""

from __future__ import annotations

import datetime as dt
import os
import select
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from powernode.db.engine import Database
from powernode.providers.qemu_runner import VmFiles, recorded
from powernode.testing import POWERNODE, running_server
from tests.cli.harness import Cli
from tests.conftest import run_coroutine
from tests.providers.conftest import QemuApi
from tests.providers.factories import register_artifact


async def create(q: QemuApi, name: str = "vm-1", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "template_id": q.template_id, "provider_account_id": q.account_id}
    node: dict[str, Any] = await q.api.ok("POST", "/nodes", json={**body, **extra})
    return node


def ops(q: QemuApi, node: dict[str, Any]) -> list[str]:
    return [e["op"] for e in recorded(VmFiles(q.data_dir / "nodes" / node["id"]))]


async def test_stop_start_and_terminate_map_onto_the_vm(qemu_api: QemuApi) -> None:
    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    node = await create(qemu_api)
    assert node["state"] == "provisioning"
    directory = qemu_api.data_dir / "nodes" / node["id"]
    assert ops(qemu_api, node) == ["launch"]
    state_disk = directory / "state.img"
    made = state_disk.stat().st_mtime_ns
    await qemu_api.api.ok("POST", "/nodes/vm-1/actions/ready")
    stopped = await qemu_api.api.ok("POST", "/nodes/vm-1/actions/stop")
    assert stopped["state"] == "stopped"
    assert ops(qemu_api, node) == ["launch", "stop"]
    assert state_disk.stat().st_mtime_ns == made  # kept across stop/start
    started = await qemu_api.api.ok("POST", "/nodes/vm-1/actions/start")
    assert (started["state"], started["failure_reason"]) == ("provisioning", None)
    assert ops(qemu_api, node) == ["launch", "stop", "launch"]
    assert state_disk.stat().st_mtime_ns == made
    (directory / "console.log").write_text("booted\n")
    gone = await qemu_api.api.ok("POST", "/nodes/vm-1/actions/terminate")
    assert gone["state"] == "terminated"
    assert ops(qemu_api, node) == ["launch", "stop", "launch", "stop"]
    assert not state_disk.exists()
    assert not (directory / "seed.json").exists()
    assert (directory / "console.log").read_text() == "booted\n"  # kept for the post-mortem
    assert (await qemu_api.api.call("GET", "/nodes/vm-1/console")).text == "booted\n"


async def test_a_node_without_an_artifact_fails_with_the_command_that_builds_one(
    qemu_api: QemuApi,
) -> None:
    node = await create(qemu_api, arch="arm64")
    assert node["state"] == "failed"
    assert node["failure_reason"] == (
        "qemu provider: provision failed: no initramfs artifact for template web arch arm64: "
        "run `powernode image build web --arch arm64`"
    )
    assert ops(qemu_api, node) == []
    events = await qemu_api.api.ok("GET", "/events", params={"subject_id": node["id"]})
    assert "node.fail" in [e["kind"] for e in events["items"]]


async def test_an_artifact_whose_bytes_left_the_content_store_fails_the_node_saying_so(
    qemu_api: QemuApi,
) -> None:
    await register_artifact(
        qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id), store_bytes=False
    )
    node = await create(qemu_api)
    assert node["state"] == "failed"
    assert "is missing from the content store" in node["failure_reason"]


async def test_a_node_without_a_template_fails_saying_it_needs_one(qemu_api: QemuApi) -> None:
    node = await create(qemu_api, template_id=None)
    assert node["state"] == "failed"
    assert "has no template" in node["failure_reason"]
    assert "--template" in node["failure_reason"]


async def test_the_disabled_runner_fails_the_node_saying_how_to_enable_it(
    qemu_api: QemuApi,
) -> None:
    from powernode.providers.runtime import ProviderRuntime

    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    state = qemu_api.api.app.state
    disabled = qemu_api.settings.model_copy(update={"qemu_runner": "disabled"})
    state.providers = ProviderRuntime(state.db, disabled, state.ca, state.revocations)
    node = await create(qemu_api)
    assert node["state"] == "failed"
    assert "POWERNODE_QEMU_RUNNER=disabled" in node["failure_reason"]
    assert "set POWERNODE_QEMU_RUNNER=real" in node["failure_reason"]
    assert not (qemu_api.data_dir / "nodes" / node["id"] / "state.img").exists()
    # Nothing runs, so terminating still works (and revokes).
    gone = await qemu_api.api.ok("POST", "/nodes/vm-1/actions/terminate")
    assert gone["state"] == "terminated"


async def test_the_console_endpoint_returns_the_logs_tail_as_text(qemu_api: QemuApi) -> None:
    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    node = await create(qemu_api)
    empty = await qemu_api.api.call("GET", f"/nodes/{node['id']}/console")
    assert (empty.status_code, empty.text, empty.headers["x-console-size"]) == (200, "", "0")
    log = qemu_api.data_dir / "nodes" / node["id"] / "console.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(10000)))
    whole = await qemu_api.api.call("GET", "/nodes/vm-1/console")
    assert whole.headers["content-type"] == "text/plain; charset=utf-8"
    assert len(whole.content) == 64 * 1024
    assert whole.text.endswith("line 9999\n")
    assert int(whole.headers["x-console-size"]) == log.stat().st_size
    tail = await qemu_api.api.call("GET", "/nodes/vm-1/console", params={"tail_bytes": 10})
    assert tail.text == "line 9999\n"
    size = int(tail.headers["x-console-size"])
    with log.open("ab") as handle:
        handle.write(b"more\n")
    since = await qemu_api.api.call("GET", "/nodes/vm-1/console", params={"since": size})
    assert since.text == "more\n"
    reader = await qemu_api.api.call("GET", "/nodes/vm-1/console", role=None)
    assert reader.status_code == 401


async def test_a_node_whose_provider_keeps_no_console_is_a_clear_404(qemu_api: QemuApi) -> None:
    await qemu_api.api.ok("POST", "/nodes", json={"name": "bare"})
    response = await qemu_api.api.call("GET", "/nodes/bare/console")
    assert response.status_code == 404
    assert response.json()["detail"] == (
        "node bare has no console log: its machine is on no provider, which keeps none "
        "(the qemu provider does)"
    )
    missing = await qemu_api.api.call("GET", "/nodes/nope/console")
    assert missing.status_code == 404


def _register(database_url: str, data_dir: Path, template_id: str) -> None:
    async def go() -> None:
        db = Database(database_url)
        try:
            await register_artifact(
                db, data_dir, uuid.UUID(template_id), created_at=dt.datetime.now(dt.UTC)
            )
        finally:
            await db.dispose()

    run_coroutine(go)


def test_the_cli_drives_a_qemu_node_and_follows_its_console(
    tmp_path: Path, migrated_db_url: str
) -> None:
    """`init` creates the `qemu` account; create, console (tail and follow), stop, start and
    terminate through the CLI against a real server (recorder runner)."""
    data = tmp_path / "cp"
    env = {"POWERNODE_QEMU_RUNNER": "recorder"}
    with running_server(data, database_url=migrated_db_url, env=env) as server:
        cli = Cli.for_server(server)
        accounts = {a["name"]: a["kind"] for a in cli.json("provider", "list")}
        assert accounts["qemu"] == "qemu"
        template = cli.json("template", "create", "web")
        _register(migrated_db_url, data, template["id"])
        node = cli.json("node", "create", "vm-1", "--provider", "qemu", "--template", "web")
        assert node["state"] == "provisioning", node
        directory = data / "nodes" / node["id"]
        assert [e["op"] for e in recorded(VmFiles(directory))] == ["launch"]

        (directory / "console.log").write_text("Linux version 6.1\nlogin: \n")
        assert cli.run("node", "console", "vm-1").stdout == "Linux version 6.1\nlogin: \n"
        assert cli.run("node", "console", "vm-1", "--tail-bytes", "8").stdout == "login: \n"
        with subprocess.Popen(
            [POWERNODE, "node", "console", "vm-1", "--tail-bytes", "8", "--follow"],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as follow:
            try:
                assert _read_until(follow, b"login: \n") == b"login: \n"
                with (directory / "console.log").open("a") as handle:
                    handle.write("agent enrolled\n")
                assert _read_until(follow, b"enrolled\n") == b"agent enrolled\n"
            finally:
                follow.kill()

        cli.run("node", "action", "vm-1", "ready")
        assert cli.json("node", "action", "vm-1", "stop")["state"] == "stopped"
        assert cli.json("node", "action", "vm-1", "start")["state"] == "provisioning"
        assert cli.json("node", "action", "vm-1", "terminate")["state"] == "terminated"
        assert [e["op"] for e in recorded(VmFiles(directory))] == [
            "launch",
            "stop",
            "launch",
            "stop",
        ]
        assert not (directory / "state.img").exists()

        local = cli.json("node", "create", "bare")
        failure = cli.fails("node", "console", local["name"])
        assert "keeps none" in failure.stderr
        assert failure.returncode != 0


def _read_until(proc: subprocess.Popen[bytes], end: bytes, within_s: float = 15) -> bytes:
    assert proc.stdout is not None
    data = b""
    deadline = time.monotonic() + within_s
    while not data.endswith(end):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else b""
            raise AssertionError(f"console --follow printed {data!r}, not {end!r}: {err!r}")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            data += os.read(proc.stdout.fileno(), 4096)
    return data
