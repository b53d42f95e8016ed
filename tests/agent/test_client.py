"""The node API client against a real HTTPS node API (tests/agent/fake_api.py)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from powernode.agent import tls
from powernode.agent.backoff import Backoff
from powernode.agent.client import NodeClient
from powernode.agent.errors import (
    CertificateRejected,
    StaleLease,
    TaskGone,
    TokenRejected,
    Unreachable,
)
from powernode.agent.pki import key_and_csr
from tests.agent.ca import TestPki, pem
from tests.agent.conftest import TOKEN
from tests.agent.fake_api import FakeNodeApi

IDENTITY: dict[str, Any] = {"source": "seed", "hostname": "test", "raw": {}}


def dead_url() -> str:
    """An https URL on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}"


async def no_sleep(seconds: float) -> None:
    pass


@asynccontextmanager
async def enrolled_client(
    api: FakeNodeApi, tmp_path: Path, urls: list[str] | None = None, **kw: Any
) -> AsyncIterator[NodeClient]:
    """Enroll (token, no client certificate), then switch to the issued certificate."""
    made = key_and_csr(api.state.node_id)
    client = NodeClient(urls or [api.url], tls.server_context(api.state.pki.root_pem), **kw)
    async with client:
        enrolled = await client.enroll(TOKEN, made.csr_pem, IDENTITY)
        key = tmp_path / "key.pem"
        key.write_text(made.key_pem)
        await client.use_tls(
            tls.mutual_context(
                enrolled.ca, enrolled.certificate, enrolled.chain, key, scratch=tmp_path
            )
        )
        yield client


async def test_round_trip_enroll_heartbeat_lease_progress_complete(
    node_api: FakeNodeApi, tmp_path: Path
) -> None:
    """Enroll, heartbeat, lease, progress and complete against an mTLS node API."""
    task_id = node_api.add_task("noop", {"message": "hi"})
    async with enrolled_client(node_api, tmp_path) as client:
        assert node_api.state.enrollments[0]["identity"] == IDENTITY
        beat = await client.heartbeat("0.1.0", {"draining": False})
        assert (beat.interval_s, beat.grace_s) == (30.0, 60.0)
        lease = await client.lease(5)
        assert lease is not None
        assert (lease.id, lease.kind, lease.payload, lease.epoch) == (
            task_id,
            "noop",
            {"message": "hi"},
            1,
        )
        assert await client.progress(task_id, lease.epoch, "half way")
        state = await client.complete(task_id, lease.epoch, "succeeded", {"message": "hi"})
        assert state == "succeeded"
    assert node_api.state.heartbeats == [{"agent_version": "0.1.0", "status": {"draining": False}}]
    assert node_api.state.completions[0]["result"] == {"message": "hi"}


async def test_lease_returns_none_when_nothing_arrives(
    node_api: FakeNodeApi, tmp_path: Path
) -> None:
    """204 from the long-poll is None."""
    async with enrolled_client(node_api, tmp_path) as client:
        assert await client.lease(0) is None


async def test_stale_epoch_is_a_typed_conflict(node_api: FakeNodeApi, tmp_path: Path) -> None:
    """After the lease moved on (new epoch), progress and complete raise StaleLease (409)."""
    task_id = node_api.add_task("noop", {})
    async with enrolled_client(node_api, tmp_path) as client:
        lease = await client.lease(5)
        assert lease is not None
        node_api.steal(task_id)
        with pytest.raises(StaleLease) as caught:
            await client.complete(task_id, lease.epoch, "succeeded", {})
        assert (caught.value.status, caught.value.title) == (409, "Conflict")
        assert "stale epoch 1" in caught.value.problem_detail
        with pytest.raises(StaleLease):
            await client.progress(task_id, lease.epoch, "still here")
        with pytest.raises(TaskGone):
            await client.progress("no-such-task", 1, "?")
    assert node_api.state.completions == []


async def test_failover_from_a_dead_url_to_the_next(node_api: FakeNodeApi, tmp_path: Path) -> None:
    """A connection error on the first URL moves the call to the second."""
    urls = [dead_url(), node_api.url]
    async with enrolled_client(node_api, tmp_path, urls=urls, rounds=1) as client:
        assert (await client.heartbeat("0.1.0", {})).interval_s == 30.0


async def test_failover_on_5xx_and_backoff_between_rounds(
    node_api: FakeNodeApi, tmp_path: Path
) -> None:
    """503s move on to the next URL; after a failed round the client sleeps, then retries."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    urls = [node_api.url, dead_url()]
    async with enrolled_client(node_api, tmp_path, urls=urls, sleep=sleep) as client:
        node_api.state.fail_next = 1
        await client.lease(0)  # 503 from the fake, refused by the dead URL...
        assert len(slept) == 1  # ...so one backoff, then the fake answers
        assert 0.0 <= slept[0] <= 0.5


async def test_unreachable_after_the_allowed_rounds(test_pki: TestPki) -> None:
    """With every URL dead, a call gives up with Unreachable after `rounds` rounds."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = NodeClient(
        [dead_url(), dead_url()], tls.server_context(test_pki.root_pem), rounds=3, sleep=sleep
    )
    async with client:
        with pytest.raises(Unreachable, match="no control-plane URL answered /tasks/lease"):
            await client.lease(0)
    assert len(slept) == 2
    assert all(0 <= s <= c for s, c in zip(slept, [0.5, 1.0], strict=True))


async def test_a_heartbeat_tries_one_round_and_never_backs_off(test_pki: TestPki) -> None:
    """The heartbeat loop retries an interval later: after a control-plane outage the next beat
    is due within one interval, not after a backoff grown during the outage."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = NodeClient(
        [dead_url(), dead_url()], tls.server_context(test_pki.root_pem), rounds=None, sleep=sleep
    )
    async with client:
        with pytest.raises(Unreachable, match="no control-plane URL answered /heartbeat"):
            await client.heartbeat("0.1.0", {})
    assert slept == []


async def test_calls_without_a_client_certificate_are_refused(
    node_api: FakeNodeApi,
) -> None:
    """A non-enroll call without a certificate is 401: CertificateRejected (re-enroll)."""
    client = NodeClient([node_api.url], tls.server_context(node_api.state.pki.root_pem))
    async with client:
        with pytest.raises(CertificateRejected) as caught:
            await client.heartbeat("0.1.0", {})
    assert caught.value.status == 401


async def test_a_revoked_certificate_is_refused(node_api: FakeNodeApi, tmp_path: Path) -> None:
    """401 for a certificate the server revoked is CertificateRejected."""
    async with enrolled_client(node_api, tmp_path) as client:
        await client.heartbeat("0.1.0", {})
        node_api.state.revoked.add(node_api.state.issued[-1])
        with pytest.raises(CertificateRejected, match="revoked"):
            await client.heartbeat("0.1.0", {})


async def test_a_spent_token_is_refused(node_api: FakeNodeApi, tmp_path: Path) -> None:
    """Enrolling twice with one token: the second is TokenRejected, not CertificateRejected."""
    async with enrolled_client(node_api, tmp_path):
        pass
    client = NodeClient([node_api.url], tls.server_context(node_api.state.pki.root_pem))
    async with client:
        with pytest.raises(TokenRejected) as caught:
            await client.enroll(TOKEN, key_and_csr(node_api.state.node_id).csr_pem, IDENTITY)
    assert caught.value.status == 401
    assert "reused" in caught.value.problem_detail


async def test_a_server_outside_the_seed_ca_is_not_trusted(
    node_api: FakeNodeApi, tmp_path: Path
) -> None:
    """The server is verified against the seed's root: another root fails every URL."""
    other = TestPki()
    client = NodeClient(
        [node_api.url], tls.server_context(other.root_pem), rounds=1, backoff=Backoff
    )
    async with client:
        with pytest.raises(Unreachable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
            await client.heartbeat("0.1.0", {})


def test_mutual_context_refuses_a_key_of_another_certificate(
    node_api: FakeNodeApi, tmp_path: Path
) -> None:
    """Loading a certificate with a key that is not its own fails."""
    key = tmp_path / "key.pem"
    key.write_text(key_and_csr("x").key_pem)
    cert = node_api.state.pki.sign_csr(key_and_csr("x").csr_pem)
    with pytest.raises(ssl.SSLError):
        tls.mutual_context(node_api.state.pki.root_pem, pem(cert), "", key, scratch=tmp_path)
