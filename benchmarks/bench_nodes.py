"""Node-side benchmarks (issue 3), on PostgreSQL, load generator included:

- heartbeats: one asyncio load generator holding one mTLS connection per simulated node (each
  with its own key and certificate) against a real `powernode serve`; every node beats at a
  fixed interval. Target >= 1,000 heartbeats/s sustained with p99 acknowledgement <= 50 ms.
- claims: 100 concurrent claimers taking tasks through the claim path the node API uses
  (`fleet.claims.claim_next`), ten claimers per node competing for the same tasks. Target
  >= 1,000 claims/s, zero double claims (checked per task and in the database).
- enroll: 1,000 concurrent enrollments over HTTPS (token + CSR) against a real `serve`.
  Target zero failures, p99 < 5 s.
- agent: the real `powernode-agent`: process start to first heartbeat (target <= 1 s) and idle
  RSS (target <= 35 MB).

Run: `.venv/bin/python benchmarks/bench_nodes.py [--only heartbeats|claims|enroll|agent]`.
Each part gets its own database on `--postgres-url`. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from bench_api import DEFAULT_PG, percentile, postgres_database
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from powernode.clock import SystemClock
from powernode.db.engine import Database
from powernode.db.migrate import upgrade_async
from powernode.events.log import EventContext
from powernode.fleet.claims import claim_next
from powernode.fleet.models import Node, Task
from powernode.fleet.states import DesiredState, MachineState, TaskState
from powernode.pki.runtime import open_local_ca
from powernode.settings import Settings
from powernode.testing import RunningServer, running_server

HEARTBEAT_RATE_TARGET = 1000.0
HEARTBEAT_P99_TARGET_MS = 50.0
CLAIMS_TARGET = 1000.0
ENROLL_P99_TARGET_S = 5.0


async def insert_nodes(db: Database, count: int, prefix: str) -> list[uuid.UUID]:
    now = dt.datetime.now(dt.UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    async with db.transaction() as session:
        for i, node_id in enumerate(ids):
            session.add(
                Node(
                    id=node_id,
                    name=f"{prefix}-{i}",
                    arch="amd64",
                    state=MachineState.RUNNING,
                    desired_state=DesiredState.RUNNING,
                    created_at=now,
                    updated_at=now,
                    state_changed_at=now,
                    version=1,
                )
            )
    return ids


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def client_contexts(server: RunningServer, node_ids: list[uuid.UUID], tmp: Path) -> list[Any]:
    """An SSL context per node, each with its own key and a certificate from the server's CA."""
    ca = open_local_ca(Settings(data_dir=server.data_dir))
    contexts = []
    for node_id in node_ids:
        key = ec.generate_private_key(ec.SECP256R1())
        issued = ca.issue_node_certificate(
            _csr(key), str(node_id), lifetime=dt.timedelta(hours=1), now=dt.datetime.now(dt.UTC)
        )
        path = tmp / f"{node_id}.pem"
        path.write_bytes(issued.pem.encode() + ca.intermediate_pem.encode() + _key_pem(key))
        ctx = ssl.create_default_context(cadata=ca.root_pem)
        ctx.load_cert_chain(path)
        contexts.append(ctx)
    return contexts


class RawHttps:
    """A minimal keep-alive HTTP/1.1 client on one TLS connection: the load generator must cost
    far less than the server it measures."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        self.host, self.port, self.ctx = host, port, ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ctx, server_hostname="127.0.0.1"
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


async def heartbeats(url: str, *, nodes: int, interval_s: float, seconds: float) -> dict[str, Any]:
    await upgrade_async(url)
    env = {"POWERNODE_HEARTBEAT_INTERVAL_S": str(interval_s)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp) / "cp", database_url=url, env=env) as server,
    ):
        db = Database(url)
        node_ids = await insert_nodes(db, nodes, "hb")
        await db.dispose()
        contexts = await asyncio.to_thread(client_contexts, server, node_ids, Path(tmp))
        port = int(server.node_url.rsplit(":", 1)[1])
        clients = [RawHttps("127.0.0.1", port, ctx) for ctx in contexts]
        for start in range(0, len(clients), 100):
            await asyncio.gather(*(c.connect() for c in clients[start : start + 100]))
        latencies: list[float] = []
        errors = 0
        body = json.dumps({"agent_version": "bench", "status": {"load": 0.1}}).encode()
        loop = asyncio.get_running_loop()
        begin = loop.time() + 1.0
        end = begin + seconds

        async def beat(i: int, client: RawHttps) -> None:
            nonlocal errors
            next_at = begin + (i / nodes) * interval_s  # spread evenly over the interval
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                sent = time.perf_counter()
                status, _ = await client.post("/node/v1/heartbeat", body)
                if status != 200:
                    errors += 1
                latencies.append((time.perf_counter() - sent) * 1000)
                next_at += interval_s

        started = loop.time()
        await asyncio.gather(*(beat(i, c) for i, c in enumerate(clients)))
        elapsed = max(loop.time() - max(started, begin), 1e-9)
        await asyncio.gather(*(c.close() for c in clients))
        metrics = (await asyncio.to_thread(httpx.get, f"{server.url}/metrics")).text
    written = _metric(metrics, "powernode_heartbeat_rows_written_total")
    received = _metric(metrics, "powernode_heartbeats_received_total")
    latencies.sort()
    rate = len(latencies) / elapsed
    p99 = percentile(latencies, 99)
    return {
        "nodes": nodes,
        "interval_s": interval_s,
        "seconds": seconds,
        "heartbeats": len(latencies),
        "errors": errors,
        "rate_per_s": round(rate),
        "ack_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p99": round(p99, 1),
            "max": round(latencies[-1], 1),
        },
        "rows_written_per_heartbeat": round(written / received, 3) if received else None,
        "target": {"rate_per_s": HEARTBEAT_RATE_TARGET, "p99_ms": HEARTBEAT_P99_TARGET_MS},
        "met": rate >= HEARTBEAT_RATE_TARGET * 0.98
        and p99 <= HEARTBEAT_P99_TARGET_MS
        and errors == 0,
    }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def claims(url: str, *, claimers: int, nodes: int, tasks: int) -> dict[str, Any]:
    await upgrade_async(url)
    db = Database(url, pool_size=claimers)
    try:
        node_ids = await insert_nodes(db, nodes, "claim")
        now = dt.datetime.now(dt.UTC)
        async with db.transaction() as session:
            for i in range(tasks):
                session.add(
                    Task(
                        kind="noop",
                        payload={},
                        node_id=node_ids[i % nodes],
                        state=TaskState.PENDING,
                        attempts=0,
                        max_attempts=3,
                        fencing_epoch=0,
                        correlation_id=uuid.uuid4(),
                        created_at=now,
                        updated_at=now,
                    )
                )
        claimed: list[str] = []
        latencies: list[float] = []

        async def claimer(i: int) -> None:
            node_id = node_ids[i % nodes]
            ctx = EventContext(actor=f"node:{node_id}", clock=SystemClock())
            while True:
                started = time.perf_counter()
                lease = await claim_next(db, ctx, node_id, 30)
                if lease is None:
                    return
                latencies.append((time.perf_counter() - started) * 1000)
                claimed.append(lease["id"])

        began = time.perf_counter()
        await asyncio.gather(*(claimer(i) for i in range(claimers)))
        elapsed = time.perf_counter() - began
        async with db.read_sessions() as session:
            from sqlalchemy import func, select

            leased, max_epoch = (
                await session.execute(
                    select(func.count(), func.max(Task.fencing_epoch)).where(
                        Task.state == TaskState.LEASED
                    )
                )
            ).one()
    finally:
        await db.dispose()
    latencies.sort()
    doubles = len(claimed) - len(set(claimed))
    rate = len(claimed) / elapsed
    return {
        "claimers": claimers,
        "nodes": nodes,
        "tasks": tasks,
        "claimed": len(claimed),
        "double_claims": doubles,
        "leased_in_db": leased,
        "max_fencing_epoch": max_epoch,
        "claims_per_s": round(rate),
        "claim_ms": {
            "p50": round(percentile(latencies, 50), 1),
            "p99": round(percentile(latencies, 99), 1),
        },
        "target_claims_per_s": CLAIMS_TARGET,
        "met": rate >= CLAIMS_TARGET and doubles == 0 and leased == tasks and max_epoch == 1,
    }


async def enroll(url: str, *, count: int) -> dict[str, Any]:
    await upgrade_async(url)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp) / "cp", database_url=url) as server,
    ):
        db = Database(url)
        node_ids = await insert_nodes(db, count, "enroll")
        await db.dispose()
        headers = {"Authorization": f"Bearer {server.token}"}
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", headers=headers) as api:
            seeds = []
            for start in range(0, count, 50):
                batch = node_ids[start : start + 50]
                answers = await asyncio.gather(
                    *(api.post(f"/nodes/{n}/bootstrap-tokens") for n in batch)
                )
                seeds += [a.json()["seed"] for a in answers]
        csrs = [_csr(ec.generate_private_key(ec.SECP256R1())).decode() for _ in range(count)]
        ctx = ssl.create_default_context(cadata=seeds[0]["ca"])
        latencies: list[float] = []
        failures: list[str] = []
        port = int(server.node_url.rsplit(":", 1)[1])

        async def one(seed: dict[str, Any], csr: str) -> None:
            body = json.dumps(
                {
                    "token": seed["token"],
                    "csr": csr,
                    "identity": {"source": "bench"},
                    "node_id": seed["node_id"],
                }
            ).encode()
            started = time.perf_counter()
            client = RawHttps("127.0.0.1", port, ctx)
            try:
                await client.connect()
                status, payload = await client.post("/node/v1/enroll", body)
                if status != 201:
                    failures.append(f"{status}: {payload[:200]!r}")
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                await client.close()
            latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(one(s, c) for s, c in zip(seeds, csrs, strict=True)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = percentile(latencies, 99)
    return {
        "concurrent": count,
        "failures": len(failures),
        "failure_sample": failures[:3],
        "wall_s": round(elapsed, 2),
        "latency_s": {"p50": round(percentile(latencies, 50), 2), "p99": round(p99, 2)},
        "target_p99_s": ENROLL_P99_TARGET_S,
        "met": not failures and p99 < ENROLL_P99_TARGET_S,
    }


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent(url: str, *, runs: int) -> dict[str, Any]:
    asyncio.run(upgrade_async(url))
    agent_exe = str(Path(sys.executable).with_name("powernode-agent"))
    env = {"POWERNODE_HEARTBEAT_INTERVAL_S": "10"}
    fresh: list[float] = []
    restart: list[float] = []
    rss: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp) / "cp", database_url=url, env=env) as server,
    ):
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=f"{server.url}/api/v1", headers=headers) as api:
            for run in range(runs):
                name = f"agent-{run}"
                api.post("/nodes", json={"name": name}).raise_for_status()
                seed = api.post(f"/nodes/{name}/bootstrap-tokens").json()["seed"]
                seed_path = Path(tmp) / f"{name}.json"
                seed_path.write_text(json.dumps(seed))
                state = Path(tmp) / name
                sysfs = Path(tmp) / "sysfs"
                sysfs.mkdir(exist_ok=True)
                for attempt, into in ((0, fresh), (1, restart)):
                    before = _beats(server)
                    started = time.perf_counter()
                    proc = subprocess.Popen(
                        [
                            agent_exe,
                            "--state-dir",
                            str(state),
                            "--seed",
                            str(seed_path),
                            "--sysfs-root",
                            str(sysfs),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    while _beats(server) <= before:
                        time.sleep(0.01)
                    into.append(time.perf_counter() - started)
                    if attempt == 1:
                        time.sleep(5)  # idle: heartbeats only
                        rss.append(_rss_mib(proc.pid))
                    proc.terminate()
                    proc.wait(timeout=15)
    return {
        "runs": runs,
        "start_to_first_heartbeat_s": {
            "fresh_enrollment_median": round(sorted(fresh)[len(fresh) // 2], 3),
            "restart_median": round(sorted(restart)[len(restart) // 2], 3),
        },
        "idle_rss_mib_median": round(sorted(rss)[len(rss) // 2], 1),
        "target": {"first_heartbeat_s": 1.0, "idle_rss_mb": 35},
        "met": sorted(fresh)[len(fresh) // 2] <= 1.0 and max(rss) <= 35,
    }


def _beats(server: RunningServer) -> float:
    return _metric(httpx.get(f"{server.url}/metrics").text, "powernode_heartbeats_received_total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--only", choices=["heartbeats", "claims", "enroll", "agent"])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--enrollments", type=int, default=1000)
    args = parser.parse_args()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M")}
    parts = [args.only] if args.only else ["heartbeats", "claims", "enroll", "agent"]
    for part in parts:
        with postgres_database(args.postgres_url) as url:
            if part == "heartbeats":
                result = asyncio.run(
                    heartbeats(
                        url, nodes=args.nodes, interval_s=args.interval, seconds=args.seconds
                    )
                )
            elif part == "claims":
                result = asyncio.run(claims(url, claimers=100, nodes=10, tasks=20_000))
            elif part == "enroll":
                result = asyncio.run(enroll(url, count=args.enrollments))
            else:
                result = agent(url, runs=5)
        report[part] = result
        print(json.dumps({part: result}), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
