"""The agent's main loop, in-process, against a real HTTPS node API (tests/agent/fake_api.py).

Identity discovery is the real one, pointed at a seed file and an empty sysfs tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from powernode.agent.config import AgentConfig
from powernode.agent.executors import PowerSettings
from powernode.agent.pki import KeyAndCsr, key_and_csr
from powernode.agent.runner import Agent
from tests.agent.ca import TestPki
from tests.agent.conftest import FRESH_TOKEN, TOKEN
from tests.agent.fake_api import FakeNodeApi, serve

SeedWriter = Callable[[dict[str, Any]], Path]


async def keymaker(node_id: str) -> KeyAndCsr:
    return await asyncio.to_thread(key_and_csr, node_id)


def make_agent(tmp_path: Path, seed: Path, **overrides: Any) -> Agent:
    """An agent over tmp_path/state with an empty sysfs and harmless power commands."""
    (tmp_path / "sys").mkdir(exist_ok=True)
    fields: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "seed_file": seed,
        "sysfs_root": tmp_path / "sys",
        "lease_wait_s": 1,
        "shutdown_grace_s": 2.0,
        "power": PowerSettings(reboot=("true",), shutdown=("true",)),
    }
    fields.update(overrides)
    return Agent(AgentConfig(**fields), keymaker=keymaker)


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[asyncio.Task[int]]:
    """Run the agent in the background; stop it cleanly at the end and expect exit 0."""
    task = asyncio.create_task(agent.run())
    try:
        yield task
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0


async def wait_for(api: FakeNodeApi, what: str, count: int = 1) -> list[dict[str, Any]]:
    return await asyncio.to_thread(api.wait_for, what, count)


async def test_once_enrolls_runs_one_shell_task_and_reports_it(
    node_api: FakeNodeApi, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """--once: enroll with the seed, heartbeat, run the queued shell task, report it, exit 0."""
    task_id = node_api.add_task("shell", {"argv": ["echo", "hello"], "timeout_s": 30, "env": {}})
    agent = make_agent(tmp_path, write_seed(node_api.seed(TOKEN)), once=True)
    assert await agent.run() == 0
    (done,) = node_api.state.completions
    assert (done["task_id"], done["epoch"], done["outcome"]) == (task_id, 1, "succeeded")
    assert done["result"]["stdout"] == "hello\n"
    assert node_api.state.heartbeats[0]["status"]["draining"] is False
    enrolled = node_api.state.enrollments[0]
    assert enrolled["identity"]["source"] == "seed"
    state = tmp_path / "state"
    assert json.loads((state / "seed.json").read_text())["token"] == TOKEN
    assert json.loads((state / "identity.json").read_text()) == enrolled["identity"]

    # A second run uses the stored certificate: no second enrollment.
    node_api.add_task("noop", {"message": "again"})
    assert await make_agent(tmp_path, tmp_path / "seed.json", once=True).run() == 0
    assert len(node_api.state.enrollments) == 1
    assert node_api.state.completions[-1]["result"] == {"message": "again"}


async def test_unknown_kind_completes_as_failed(
    node_api: FakeNodeApi, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """A task kind the agent does not know is reported failed with a clear error."""
    node_api.add_task("teleport", {"to": "mars"})
    assert await make_agent(tmp_path, write_seed(node_api.seed(TOKEN)), once=True).run() == 0
    (done,) = node_api.state.completions
    assert done["outcome"] == "failed"
    assert "unknown task kind 'teleport'" in done["result"]["error"]


async def test_a_stale_epoch_at_completion_drops_the_result(
    node_api: FakeNodeApi, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """If the lease moved on while the task ran, the 409 is logged and the result dropped."""
    task_id = node_api.add_task("shell", {"argv": ["sleep", "1"]})
    agent = make_agent(tmp_path, write_seed(node_api.seed(TOKEN)), once=True)
    run = asyncio.create_task(agent.run())
    await asyncio.to_thread(node_api.wait_until, lambda s: task_id in s.epochs)
    node_api.steal(task_id)
    assert await asyncio.wait_for(run, timeout=15) == 0
    assert node_api.state.completions == []
    assert "/tasks/" + task_id + "/complete" in node_api.state.requests


async def test_progress_extends_the_lease_while_a_task_runs(
    test_pki: TestPki, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """Progress goes out about every third of the visibility timeout, with the lease epoch."""
    with serve(test_pki, tmp_path, tokens={TOKEN}, visibility_timeout_s=3.0) as api:
        task_id = api.add_task("shell", {"argv": ["sleep", "2.5"]})
        assert await make_agent(tmp_path, write_seed(api.seed(TOKEN)), once=True).run() == 0
        assert len(api.state.progress) >= 2
        assert {(p["task_id"], p["epoch"]) for p in api.state.progress} == {(task_id, 1)}
        assert api.state.completions[0]["outcome"] == "succeeded"


async def test_a_lease_lost_during_the_task_cancels_it(
    test_pki: TestPki, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """A 409 on progress means another lease owns the task: kill it, report nothing."""
    with serve(test_pki, tmp_path, tokens={TOKEN}, visibility_timeout_s=3.0) as api:
        task_id = api.add_task("shell", {"argv": ["sleep", "60"]})
        agent = make_agent(tmp_path, write_seed(api.seed(TOKEN)), once=True)
        started = time.monotonic()
        run = asyncio.create_task(agent.run())
        await asyncio.to_thread(api.wait_until, lambda s: task_id in s.epochs)
        api.steal(task_id)
        assert await asyncio.wait_for(run, timeout=15) == 0
        assert time.monotonic() - started < 10
        assert api.state.completions == []


async def test_drain_stops_leasing_but_not_heartbeats(
    test_pki: TestPki, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """After a drain task the agent reports draining and leaves later tasks queued."""
    with serve(test_pki, tmp_path, tokens={TOKEN}, heartbeat_interval_s=1.0) as api:
        api.add_task("drain", {})
        api.add_task("noop", {})
        agent = make_agent(tmp_path, write_seed(api.seed(TOKEN)))
        async with running(agent):
            await wait_for(api, "completions")
            beats = len(api.state.heartbeats)
            await wait_for(api, "heartbeats", beats + 2)
        assert [c["result"] for c in api.state.completions] == [{"draining": True}]
        assert len(api.state.queue) == 1
        assert api.state.heartbeats[-1]["status"]["draining"] is True


async def test_survives_a_control_plane_restart(
    test_pki: TestPki, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """While the node API is down the agent retries; when it is back, work goes on."""
    with contextlib.ExitStack() as first:
        api = first.enter_context(
            serve(test_pki, tmp_path, tokens={TOKEN}, heartbeat_interval_s=1.0)
        )
        agent = make_agent(tmp_path, write_seed(api.seed(TOKEN)))
        port = int(api.url.rsplit(":", 1)[1])
        async with running(agent) as run:
            await wait_for(api, "heartbeats", 2)
            first.close()  # the control plane goes away...
            await asyncio.sleep(1.0)
            seen = len(api.state.requests)
            await asyncio.sleep(2.0)
            assert len(api.state.requests) == seen
            assert not run.done()
            api.add_task("noop", {"message": "back"})
            with serve(test_pki, tmp_path, tokens=set(), port=port, state=api.state):
                await wait_for(api, "completions")  # ...and comes back
    assert api.state.completions[0]["result"] == {"message": "back"}
    assert len(api.state.enrollments) == 1


async def test_renews_before_expiry_and_uses_the_new_certificate(
    test_pki: TestPki, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """At about 2/3 of a short lifetime the agent renews; calls then use the new certificate."""
    lifetime = dt.timedelta(seconds=8)
    with serve(
        test_pki, tmp_path, tokens={TOKEN}, heartbeat_interval_s=1.0, cert_lifetime=lifetime
    ) as api:
        agent = make_agent(tmp_path, write_seed(api.seed(TOKEN)))
        async with running(agent):
            first_cert = await asyncio.to_thread(_wait_file, tmp_path / "state" / "cert.pem")
            await asyncio.to_thread(api.wait_until, lambda s: s.renewals >= 1)
            await asyncio.to_thread(_wait_file, tmp_path / "state" / "cert.pem", first_cert)
            api.state.revoked.add(api.state.issued[0])  # the old certificate is no longer used
            beats = len(api.state.heartbeats)
            await wait_for(api, "heartbeats", beats + 2)
        assert len(api.state.enrollments) == 1


def _wait_file(path: Path, other_than: str | None = None) -> str:
    """The content of `path` once it exists (and differs from `other_than`)."""
    deadline = time.monotonic() + 10
    while not path.exists() or path.read_text() == other_than:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)
    return path.read_text()


async def test_a_refused_certificate_needs_a_fresh_token_to_re_enroll(
    node_api: FakeNodeApi, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """After a 401 on its certificate the agent re-enrolls, but never with a spent token."""
    node_api.state.heartbeat_interval_s = 1.0
    seed = write_seed(node_api.seed(TOKEN))
    agent = make_agent(tmp_path, seed)
    async with running(agent):
        await wait_for(node_api, "heartbeats")
        node_api.state.revoked.add(node_api.state.issued[0])
        await asyncio.sleep(3)
        assert len(node_api.state.enrollments) == 1  # the spent token was not sent again
        write_seed(node_api.seed(FRESH_TOKEN))
        await asyncio.to_thread(node_api.wait_until, lambda s: len(s.enrollments) >= 2, timeout=60)
        assert [e["token"] for e in node_api.state.enrollments] == [TOKEN, FRESH_TOKEN]
        beats = len(node_api.state.heartbeats)
        await wait_for(node_api, "heartbeats", beats + 1)


async def test_sigterm_during_a_task_abandons_it_after_the_grace_period(
    node_api: FakeNodeApi, tmp_path: Path, write_seed: SeedWriter
) -> None:
    """Stop during a long task: the task gets the grace period, then is abandoned."""
    marker = tmp_path / "running"
    code = f"import time; open({str(marker)!r}, 'w').close(); time.sleep(60)"
    node_api.add_task("shell", {"argv": [sys.executable, "-c", code]})
    agent = make_agent(tmp_path, write_seed(node_api.seed(TOKEN)), shutdown_grace_s=1.0)
    run = asyncio.create_task(agent.run())
    await asyncio.to_thread(_wait_file, marker)
    started = time.monotonic()
    agent.request_stop()
    assert await asyncio.wait_for(run, timeout=15) == 0
    assert 0.9 <= time.monotonic() - started < 5
    assert node_api.state.completions == []
