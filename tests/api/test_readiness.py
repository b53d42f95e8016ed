"""/readyz tells a load balancer whether this replica can serve: database up and migrated."""

from __future__ import annotations

from pathlib import Path

import httpx

from powernode.api.app import create_app
from powernode.db.migrate import upgrade_async
from powernode.settings import Settings


async def test_readyz_is_503_until_the_schema_is_at_head(fresh_db_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=fresh_db_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            before = await http.get("/readyz")
            assert before.status_code == 503
            assert before.json()["migration"] is None
            assert (await http.get("/healthz")).status_code == 200
            await upgrade_async(fresh_db_url)
            assert (await http.get("/readyz")).status_code == 200


async def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"
    app = create_app(Settings(data_dir=tmp_path, database_url=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
