"""Operator API benchmark: create, get and list nodes against a real control plane (issue 2).

For each database (`--db sqlite`, `--db postgresql`, default both) this script:

1. starts a real control plane: a fresh data directory in a temp dir (and, for PostgreSQL, a
   freshly created database `powernode_bench_<hex>` on the `--postgres-url` server), runs
   `powernode init`, then `powernode serve` as a subprocess and waits for `/readyz`;
2. creates `--nodes` nodes (default 10,000) with `POST /api/v1/nodes`, 16 requests in flight,
   and reports total seconds and creates/s;
3. GETs one node 1,000 times sequentially (after a warm-up) and reports p50/p90/p99/max in ms;
4. lists every node with `GET /api/v1/nodes?limit=1000`, following `next_cursor`, 5 times, checks
   the count and reports the median and min seconds per full list and the page count.

It prints one JSON object per database (with machine info, the targets, their anchors and a
`pass` flag per target) and writes it to `benchmarks/results/api-<db>.json`. The server is
killed and the PostgreSQL database dropped whatever happens.

Run it with `make bench` or `.venv/bin/python benchmarks/bench_api.py [--db sqlite] [--nodes N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from powernode.testing import machine_info, running_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_PG = os.environ.get(
    "POWERNODE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CONCURRENCY = 16
GETS = 1000
WARMUP = 50
LIST_REPEATS = 5
PAGE = 1000

GET_P99_TARGET_MS = 20.0
GET_ANCHOR = "Kubernetes API SLO: p99 <= 1 s per single-object call"
LIST_10K_TARGET_S = 1.0
LIST_ANCHOR = "MAAS users report ~40 s to list about 100 machines"


def percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, round(q / 100 * len(sorted_ms)))
    return sorted_ms[min(rank, len(sorted_ms)) - 1]


@contextlib.contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server at `server_url`, dropped on exit; yields its URL."""
    name = f"powernode_bench_{secrets.token_hex(4)}"
    server = make_url(server_url).set(drivername="postgresql+asyncpg")

    async def run(sql: str) -> None:
        engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(drivername="postgresql", database=name).render_as_string(False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def control_plane(database_url: str | None) -> Iterator[tuple[str, str]]:
    """Init and serve a control plane in a temp dir; yields (base URL, admin token)."""
    with (
        tempfile.TemporaryDirectory(prefix="powernode-bench-") as tmp,
        running_server(Path(tmp) / "data", database_url=database_url) as server,
    ):
        yield server.url, server.token


async def bench_create(client: httpx.AsyncClient, count: int) -> tuple[dict[str, Any], str]:
    """Create `count` nodes, CONCURRENCY in flight; returns the figures and the first node's id."""
    gate = asyncio.Semaphore(CONCURRENCY)
    labels = {"env": "bench", "rack": "r07"}

    async def create(i: int) -> str:
        body = {"name": f"node-{i:05d}", "arch": "amd64", "labels": labels}
        async with gate:
            resp = await client.post("/api/v1/nodes", json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"create {i}: {resp.status_code} {resp.text}")
        node_id: str = resp.json()["id"]
        return node_id

    start = time.perf_counter()
    ids = await asyncio.gather(*(create(i) for i in range(1, count + 1)))
    seconds = time.perf_counter() - start
    figures = {"nodes": count, "seconds": round(seconds, 3), "per_s": round(count / seconds, 1)}
    return figures, ids[0]


async def bench_get(client: httpx.AsyncClient, node_id: str) -> dict[str, Any]:
    url = f"/api/v1/nodes/{node_id}"
    for _ in range(WARMUP):
        (await client.get(url)).raise_for_status()
    samples: list[float] = []
    for _ in range(GETS):
        start = time.perf_counter()
        resp = await client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        resp.raise_for_status()
    samples.sort()
    return {
        "requests": GETS,
        **{f"p{q}_ms": round(percentile(samples, q), 2) for q in (50, 90, 99)},
        "max_ms": round(samples[-1], 2),
    }


async def bench_list(client: httpx.AsyncClient, count: int) -> dict[str, Any]:
    times: list[float] = []
    pages = 0
    for _ in range(LIST_REPEATS):
        seen, pages, cursor = 0, 0, None
        start = time.perf_counter()
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if cursor:
                params["cursor"] = cursor
            resp = await client.get("/api/v1/nodes", params=params)
            resp.raise_for_status()
            page = resp.json()
            seen, pages, cursor = seen + len(page["items"]), pages + 1, page["next_cursor"]
            if cursor is None:
                break
        times.append(time.perf_counter() - start)
        if seen != count:
            raise RuntimeError(f"listed {seen} nodes, expected {count}")
    return {
        "nodes": count,
        "pages": pages,
        "repeats": LIST_REPEATS,
        "median_s": round(statistics.median(times), 3),
        "min_s": round(min(times), 3),
    }


async def run_benchmarks(base: str, token: str, count: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=60,
    ) as client:
        create, first_id = await bench_create(client, count)
        get = await bench_get(client, first_id)
        listing = await bench_list(client, count)
    return {"create": create, "get": get, "list": listing}


def bench_database(db: str, count: int, postgres_url: str) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database(postgres_url)) if db == "postgresql" else None
        base, token = stack.enter_context(control_plane(url))
        results = asyncio.run(run_benchmarks(base, token, count))
    # The list target is stated for 10,000 nodes; scale it linearly for quick runs.
    list_target = LIST_10K_TARGET_S * count / 10_000
    get_p99, list_s = results["get"]["p99_ms"], results["list"]["median_s"]
    targets = {
        "get_p99_ms": {
            "target": GET_P99_TARGET_MS,
            "measured": get_p99,
            "pass": get_p99 <= GET_P99_TARGET_MS,
            "anchor": GET_ANCHOR,
        },
        "list_all_s": {
            "target": round(list_target, 3),
            "measured": list_s,
            "pass": list_s <= list_target,
            "anchor": LIST_ANCHOR,
        },
    }
    return {"db": db, "machine": machine_info(), **results, "targets": targets}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for db in args.db or ["sqlite", "postgresql"]:
        result = bench_database(db, args.nodes, args.postgres_url)
        text = json.dumps(result, indent=2)
        print(text, flush=True)
        (RESULTS / f"api-{db}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
