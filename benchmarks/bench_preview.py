"""Template preview benchmark (issue 4): a 20-module template totalling 100,000 files.

Starts a real control plane (`powernode.testing.running_server`, SQLite or PostgreSQL), records
20 module versions of 5,000 entries each straight into its database and content store (the
entries are synthetic: preview reads entry lists, not file contents), with overlapping
directories and masks on some modules. `--overlap N` adds the same N files to every module
(each of those paths then has 20 providers to judge) and a file that each module changes,
extending the one below (19 overrides): composition's worst case, not the issue's workload.
Then it times
`GET /api/v1/templates/bench/preview` over HTTP: the first call (entry lists read from the
store and decoded) and then 10 more (entry lists cached), and prints JSON with the medians
against the target (≤ 1 s).

Run: `.venv/bin/python benchmarks/bench_preview.py [--db sqlite|postgresql] [--overlap N]` (for
PostgreSQL a fresh database is created on `--postgres-url` and dropped afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from bench_api import DEFAULT_PG, postgres_database

from powernode.db.engine import Database
from powernode.events.log import EventContext
from powernode.modules.entries import DIR, FILE, Entry
from powernode.modules.importer import ImportedTree
from powernode.modules.service import record_version
from powernode.modules.spec import ModuleSpec
from powernode.modules.store import ContentStore
from powernode.testing import running_server

MODULES = 20
FILES_PER_MODULE = 5_000
TARGET_S = 1.0


def synthetic_entries(index: int, overlap: int = 0) -> list[Entry]:
    """5,000 files in 50 directories under a shared /usr tree; with `overlap`, that many files
    every module provides alike, and /etc/role, different in each module."""
    entries = [
        Entry(path="usr", type=DIR, mode=0o755, uid=0, gid=0),
        Entry(path=f"usr/m{index:02d}", type=DIR, mode=0o755, uid=0, gid=0),
    ]
    if overlap:
        entries.append(Entry(path="etc", type=DIR, mode=0o755, uid=0, gid=0))
        entries.append(_file("etc/role", f"role {index}"))
        entries.append(Entry(path="usr/common", type=DIR, mode=0o755, uid=0, gid=0))
        entries.extend(_file(f"usr/common/f{n:05d}", f"common {n}") for n in range(overlap))
    for d in range(50):
        directory = f"usr/m{index:02d}/d{d:02d}"
        entries.append(Entry(path=directory, type=DIR, mode=0o755, uid=0, gid=0))
        for f in range(FILES_PER_MODULE // 50):
            entries.append(_file(f"{directory}/f{f:03d}", f"{index}/{d}/{f}"))
    return sorted(entries, key=lambda e: e.path)


def _file(path: str, content: str) -> Entry:
    digest = hashlib.sha256(content.encode()).hexdigest()
    return Entry(
        path=path,
        type=FILE,
        mode=0o644,
        uid=0,
        gid=0,
        size=4096,
        sha256=digest,
        verity=f"sha256:{digest}",
    )


def spec_for(index: int, overlap: int = 0) -> ModuleSpec:
    if index == 0:
        return ModuleSpec()
    below = f"m{index - 1:02d}"
    mask = [f"/usr/{below}/d00/"] if index % 4 == 0 else []
    extends = below if overlap else None
    return ModuleSpec(dependencies={below: ">=1.0"}, mask=mask, extends=extends)


async def seed(data_dir: Path, database_url: str, overlap: int) -> None:
    db = Database(database_url)
    store = ContentStore(data_dir / "content")
    ctx = EventContext(actor="bench")
    try:
        for index in range(MODULES):
            tree = ImportedTree(
                name=None,
                version=None,
                spec=spec_for(index, overlap),
                entries=synthetic_entries(index, overlap),
            )
            async with db.transaction() as session:
                await record_version(
                    session, ctx, store, name=f"m{index:02d}", version="1.0", tree=tree
                )
    finally:
        await db.dispose()


def run(db: str, postgres_server: str, overlap: int = 0) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="powernode-bench-"))
        data = Path(tmp) / "data"
        url = (
            stack.enter_context(postgres_database(postgres_server)) if db == "postgresql" else None
        )
        with running_server(data, database_url=url) as server:
            asyncio.run(seed(data, url or f"sqlite:///{data / 'powernode.db'}", overlap))
            headers = {"Authorization": f"Bearer {server.token}"}
            with httpx.Client(
                base_url=f"{server.url}/api/v1", headers=headers, timeout=120
            ) as http:
                modules = [{"name": f"m{MODULES - 1:02d}", "version": "1.0"}]
                http.post("/templates", json={"name": "bench", "modules": modules})
                times = []
                for _ in range(11):
                    start = time.perf_counter()
                    response = http.get("/templates/bench/preview")
                    times.append(time.perf_counter() - start)
                    response.raise_for_status()
                preview = response.json()
    warm = statistics.median(times[1:])
    return {
        "db": db,
        "modules": len(preview["layers"]),
        "entries_in": MODULES * (FILES_PER_MODULE + 52 + (overlap + 3 if overlap else 0)),
        "files_out": preview["footprint"]["files"],
        "conflicts": len(preview["conflicts"]),
        "overrides": sum(o["overridden"] for o in preview["footprint"]["overrides"]),
        "cold_s": round(times[0], 3),
        "warm_median_s": round(warm, 3),
        "target_s": TARGET_S,
        "pass": times[0] <= TARGET_S and warm <= TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_PG,
        help="PostgreSQL server on which to create (and drop) a fresh database",
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=0,
        metavar="N",
        help="add N files every module provides alike, and an override per module (default 0)",
    )
    args = parser.parse_args()
    print(json.dumps(run(args.db, args.postgres_url, args.overlap), indent=2))


if __name__ == "__main__":
    main()
