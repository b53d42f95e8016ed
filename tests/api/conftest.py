"""API fixtures: the real app over a migrated database, in-process via ASGI, with a token per
role and a movable clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from powernode.api.app import create_app
from powernode.auth.roles import Role
from powernode.auth.tokens import TokenCreate, create_token
from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.log import EventContext
from powernode.settings import Settings

START = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@dataclass
class Api:
    """An HTTP client on the app plus a bearer token for each role."""

    http: httpx.AsyncClient
    tokens: dict[Role, str]
    clock: FrozenClock
    app: FastAPI

    def auth(self, role: Role | None) -> dict[str, str]:
        return {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(
        self, method: str, path: str, role: Role | None = Role.ADMIN, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.auth(role), **kwargs.pop("headers", {})}
        return await self.http.request(method, f"/api/v1{path}", headers=headers, **kwargs)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call as admin and return the JSON body, failing the test on an error status."""
        response = await self.call(method, path, **kwargs)
        assert response.status_code < 400, response.text
        return response.json() if response.content else None

    @property
    def db(self) -> Database:
        db: Database = self.app.state.db
        return db


@pytest.fixture
async def api(migrated_db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    clock = FrozenClock(START)
    app = create_app(
        Settings(data_dir=tmp_path / "data", database_url=migrated_db_url, worker_in_serve=False),
        clock=clock,
    )
    async with app.router.lifespan_context(app):
        db: Database = app.state.db
        tokens: dict[Role, str] = {}
        async with db.transaction() as session:
            for role in Role:
                _, secret = await create_token(
                    session,
                    EventContext(actor="test-setup", clock=clock),
                    TokenCreate(name=f"test-{role}", role=role),
                )
                tokens[role] = secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield Api(http=http, tokens=tokens, clock=clock, app=app)
