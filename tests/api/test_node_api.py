"""The node API over real mutual TLS against a real `serve`: enrollment and its refusals,
heartbeats, leases with fencing, renewal and revocation, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from powernode.testing import RunningServer, running_server


@pytest.fixture
def server(migrated_db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "cp", database_url=migrated_db_url) as srv:
        yield srv


def operator(server: RunningServer) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {server.token}"},
        timeout=30,
    )


def make_csr(name: str = "ignored") -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Agent:
    """A minimal client of the node API (the real agent is tested in tests/agent)."""

    server: RunningServer
    seed: dict[str, Any]
    tmp: Path
    cert_pem: str = ""
    chain_pem: str = ""

    def context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.seed["ca"])
        if with_cert:
            key_path = self.tmp / "key.pem"
            cert_path = self.tmp / "cert.pem"
            cert_path.write_text(self.cert_pem + self.chain_pem)
            ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def client(self, *, with_cert: bool = True) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server.node_url}/node/v1",
            verify=self.context(with_cert=with_cert),
            timeout=30,
        )

    def enroll(self, token: str | None = None, csr: str | None = None) -> httpx.Response:
        key, own_csr = make_csr()
        (self.tmp / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        body = {
            "token": token or self.seed["token"],
            "csr": csr or own_csr,
            "identity": {"source": "seed", "hostname": "test"},
            "node_id": self.seed["node_id"],
        }
        with self.client(with_cert=False) as http:
            response = http.post("/enroll", json=body)
        if response.status_code == 201:
            self.cert_pem = response.json()["certificate"]
            self.chain_pem = response.json()["chain"]
        return response


def new_agent(server: RunningServer, tmp_path: Path, name: str) -> Agent:
    with operator(server) as api:
        api.post("/nodes", json={"name": name}).raise_for_status()
        seed = api.post(f"/nodes/{name}/bootstrap-tokens").json()["seed"]
    directory = tmp_path / name
    directory.mkdir()
    return Agent(server, seed, directory)


def events(server: RunningServer, **params: str) -> list[dict[str, Any]]:
    with operator(server) as api:
        items: list[dict[str, Any]] = api.get("/events", params={"limit": 1000, **params}).json()[
            "items"
        ]
        return items


def test_a_node_enrolls_heartbeats_and_goes_running(server: RunningServer, tmp_path: Path) -> None:
    agent = new_agent(server, tmp_path, "web-1")
    assert agent.seed["urls"] == [server.node_url]
    response = agent.enroll()
    assert response.status_code == 201, response.text
    body = response.json()
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert (
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == agent.seed["node_id"]
    )
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=23) < lifetime <= dt.timedelta(hours=24, minutes=5)
    with agent.client() as http:
        beat = http.post("/heartbeat", json={"agent_version": "test", "status": {"load": 0.1}})
    assert beat.status_code == 200, beat.text
    assert beat.json()["interval_s"] == 10
    assert beat.json()["grace_s"] == 40
    with operator(server) as api:
        node = api.get("/nodes/web-1").json()
    assert node["state"] == "running"
    assert node["identity"] == {"source": "seed", "hostname": "test"}
    kinds = [e["kind"] for e in events(server, subject_id=agent.seed["node_id"])]
    assert "node.enrolled" in kinds
    assert kinds[-2:] == ["node.provision", "node.ready"]


def test_token_replay_expiry_another_node_and_bad_csr_are_refused_and_audited(
    server: RunningServer, tmp_path: Path
) -> None:
    agent = new_agent(server, tmp_path, "a")
    other = new_agent(server, tmp_path, "b")
    bad_csr = agent.enroll(csr="-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
    assert bad_csr.status_code == 422
    assert agent.enroll().status_code == 201
    replay = agent.enroll()
    assert replay.status_code == 401
    assert "already used" in replay.json()["detail"]
    wrong_node = Agent(server, {**other.seed, "node_id": agent.seed["node_id"]}, other.tmp).enroll()
    assert wrong_node.status_code == 401
    assert "another node" in wrong_node.json()["detail"]
    malformed = other.enroll(token="NOT-A-TOKEN")
    assert malformed.status_code == 401
    assert "malformed" in malformed.json()["detail"]
    refused = [e for e in events(server, kind="node.enroll_refused")]
    assert len(refused) == 4
    assert all(e["severity"] == "critical" for e in refused)


def test_an_expired_token_is_refused(
    server: RunningServer, migrated_db_url: str, tmp_path: Path
) -> None:
    agent = new_agent(server, tmp_path, "late")
    _expire_tokens(migrated_db_url)  # backdate it rather than sleep through the 15 minutes
    response = agent.enroll()
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def _expire_tokens(url: str) -> None:
    import asyncio

    from sqlalchemy import update

    from powernode.db.engine import Database
    from powernode.pki.models import BootstrapToken

    async def run() -> None:
        db = Database(url)
        try:
            async with db.transaction() as session:
                past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
                await session.execute(update(BootstrapToken).values(expires_at=past))
        finally:
            await db.dispose()

    asyncio.run(run())


def test_without_a_client_certificate_only_enroll_answers(
    server: RunningServer, tmp_path: Path
) -> None:
    agent = new_agent(server, tmp_path, "nocert")
    with agent.client(with_cert=False) as http:
        response = http.post("/heartbeat", json={})
    assert response.status_code == 401
    assert "client certificate" in response.json()["detail"]


def test_a_certificate_from_another_ca_fails_the_handshake(
    server: RunningServer, tmp_path: Path
) -> None:
    agent = new_agent(server, tmp_path, "forged")
    key, _ = make_csr()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent.seed["node_id"])])
    now = dt.datetime.now(dt.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (agent.tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    agent.cert_pem = forged.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(httpx.HTTPError), agent.client() as http:
        http.post("/heartbeat", json={})


def test_leases_are_fenced_and_a_stale_completion_is_refused(
    server: RunningServer, tmp_path: Path
) -> None:
    agent = new_agent(server, tmp_path, "worker-1")
    assert agent.enroll().status_code == 201
    with operator(server) as api, agent.client() as http:
        assert http.post("/tasks/lease", json={"wait_s": 0}).status_code == 204
        task = api.post("/tasks", json={"kind": "noop", "node": "worker-1"}).json()
        lease = http.post("/tasks/lease", json={"wait_s": 5}).json()
        assert (lease["id"], lease["epoch"], lease["attempt"]) == (task["id"], 1, 1)
        progress = http.post(f"/tasks/{task['id']}/progress", json={"epoch": 1, "message": "hi"})
        assert progress.status_code == 200, progress.text
        stale = http.post(
            f"/tasks/{task['id']}/complete", json={"epoch": 0, "outcome": "succeeded"}
        )
        assert stale.status_code == 409
        assert "stale lease" in stale.json()["detail"]
        done = http.post(
            f"/tasks/{task['id']}/complete",
            json={"epoch": 1, "outcome": "succeeded", "result": {"ok": True}},
        )
        assert done.json() == {"state": "succeeded"}
        again = http.post(
            f"/tasks/{task['id']}/complete", json={"epoch": 1, "outcome": "succeeded"}
        )
        assert again.status_code == 409
        assert api.get(f"/tasks/{task['id']}").json()["result"] == {"ok": True}


def test_a_long_poll_returns_as_soon_as_a_task_is_queued(
    server: RunningServer, tmp_path: Path
) -> None:
    import threading

    agent = new_agent(server, tmp_path, "poller")
    assert agent.enroll().status_code == 201

    def queue_later() -> None:
        time.sleep(1.0)
        with operator(server) as api:
            api.post("/tasks", json={"kind": "noop", "node": "poller"}).raise_for_status()

    thread = threading.Thread(target=queue_later)
    thread.start()
    started = time.monotonic()
    with agent.client() as http:
        response = http.post("/tasks/lease", json={"wait_s": 20})
    waited = time.monotonic() - started
    thread.join()
    assert response.status_code == 200
    assert 0.9 < waited < 3.0


def test_another_nodes_task_is_invisible(server: RunningServer, tmp_path: Path) -> None:
    mine = new_agent(server, tmp_path, "mine")
    theirs = new_agent(server, tmp_path, "theirs")
    assert mine.enroll().status_code == 201
    assert theirs.enroll().status_code == 201
    with operator(server) as api, mine.client() as http:
        task = api.post("/tasks", json={"kind": "noop", "node": "theirs"}).json()
        assert http.post("/tasks/lease", json={"wait_s": 0}).status_code == 204
        response = http.post(f"/tasks/{task['id']}/progress", json={"epoch": 0})
    assert response.status_code == 404


def test_renewal_issues_a_new_certificate_and_revocation_locks_the_node_out(
    server: RunningServer, tmp_path: Path
) -> None:
    agent = new_agent(server, tmp_path, "rotating")
    assert agent.enroll().status_code == 201
    old_serial = x509.load_pem_x509_certificate(agent.cert_pem.encode()).serial_number
    _key, csr = make_csr()
    with agent.client() as http:
        renewed = http.post("/certificate", json={"csr": csr})
    assert renewed.status_code == 200, renewed.text
    new_serial = x509.load_pem_x509_certificate(
        renewed.json()["certificate"].encode()
    ).serial_number
    assert new_serial != old_serial

    with operator(server) as api:
        listed = api.get("/nodes/rotating/certificates").json()
        assert [c["serial"] for c in listed] == [f"{old_serial:x}", f"{new_serial:x}"]
        revoked = api.post(
            "/nodes/rotating/certificates/revoke",
            json={"serial": f"{old_serial:x}", "reason": "key compromise"},
        )
        assert revoked.json() == {"revoked": [f"{old_serial:x}"]}
        crl_der = httpx.get(f"{server.url}/api/v1/pki/crl").content
    crl = x509.load_der_x509_crl(crl_der)
    assert crl.get_revoked_certificate_by_serial_number(old_serial) is not None
    with agent.client() as http:  # still the old certificate
        refused = http.post("/heartbeat", json={})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
