"""Template preview benchmark (issue 4): a 20-module template totalling 100,000 files.

Starts a real control plane (`powernode.testing.running_server`, SQLite or PostgreSQL), records
20 module versions of 5,000 entries each straight into its database and content store (the
entries are synthetic: preview reads entry lists, not file contents), with overlapping
directories, one `extends` override per module pair, and masks on some modules. Then it times
`GET /api/v1/templates/bench/preview` over HTTP: the first call (entry lists read from the
store and decoded) and then 10 more (entry lists cached), and prints JSON with the medians
against the target (≤ 1 s).

Run: `.venv/bin/python benchmarks/bench_preview.py [--db sqlite|postgresql]` (for PostgreSQL a
fresh database is created on `--postgres-url` and dropped afterwards).
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


def synthetic_entries(index: int) -> list[Entry]:
    """5,000 files in 50 directories under a shared /usr tree, plus a shared /etc file."""
    entries = [
        Entry(path="usr", type=DIR, mode=0o755, uid=0, gid=0),
        Entry(path=f"usr/m{index:02d}", type=DIR, mode=0o755, uid=0, gid=0),
    ]
    for d in range(50):
        directory = f"usr/m{index:02d}/d{d:02d}"
        entries.append(Entry(path=directory, type=DIR, mode=0o755, uid=0, gid=0))
        for f in range(FILES_PER_MODULE // 50):
            digest = hashlib.sha256(f"{index}/{d}/{f}".encode()).hexdigest()
            entries.append(
                Entry(
                    path=f"{directory}/f{f:03d}",
                    type=FILE,
                    mode=0o644,
                    uid=0,
                    gid=0,
                    size=4096,
                    sha256=digest,
                    verity=f"sha256:{digest}",
                )
            )
    return entries


def spec_for(index: int) -> ModuleSpec:
    if index == 0:
        return ModuleSpec()
    mask = [f"/usr/m{index - 1:02d}/d00/"] if index % 4 == 0 else []
    return ModuleSpec(dependencies={f"m{index - 1:02d}": ">=1.0"}, mask=mask)


async def seed(data_dir: Path, database_url: str) -> None:
    db = Database(database_url)
    store = ContentStore(data_dir / "content")
    ctx = EventContext(actor="bench")
    try:
        for index in range(MODULES):
            tree = ImportedTree(
                name=None, version=None, spec=spec_for(index), entries=synthetic_entries(index)
            )
            async with db.transaction() as session:
                await record_version(
                    session, ctx, store, name=f"m{index:02d}", version="1.0", tree=tree
                )
    finally:
        await db.dispose()


def run(db: str, postgres_server: str) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="powernode-bench-"))
        data = Path(tmp) / "data"
        url = (
            stack.enter_context(postgres_database(postgres_server)) if db == "postgresql" else None
        )
        with running_server(data, database_url=url) as server:
            asyncio.run(seed(data, url or f"sqlite:///{data / 'powernode.db'}"))
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
        "entries_in": MODULES * (FILES_PER_MODULE + 52),
        "files_out": preview["footprint"]["files"],
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
    args = parser.parse_args()
    print(json.dumps(run(args.db, args.postgres_url), indent=2))


if __name__ == "__main__":
    main()
