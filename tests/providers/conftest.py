"""The API app with the qemu provider's recorder runner, a qemu provider account and a
template to boot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from powernode.api.app import create_app
from powernode.auth.roles import Role
from powernode.auth.tokens import TokenCreate, create_token
from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.log import EventContext
from powernode.settings import Settings
from tests.api.conftest import START, Api


@dataclass
class QemuApi:
    api: Api
    settings: Settings
    account_id: str
    template_id: str

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir


def qemu_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "worker_in_serve": False,
        "qemu_runner": "recorder",
        "node_port": 8443,
        **overrides,
    }
    return Settings.model_validate(values)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[QemuApi]:
    """The app on `settings` with a token per role, a `qemu` account and a template `web`."""
    clock = FrozenClock(START)
    app = create_app(settings, clock=clock)
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
            api = Api(http=http, tokens=tokens, clock=clock, app=app)
            account = await api.ok(
                "POST", "/provider-accounts", json={"name": "qemu", "kind": "qemu"}
            )
            template = await api.ok("POST", "/templates", json={"name": "web"})
            yield QemuApi(api, settings, account["id"], template["id"])


@pytest.fixture
async def qemu_api(migrated_db_url: str, tmp_path: Path) -> AsyncIterator[QemuApi]:
    """The app (recorder runner), a `qemu` provider account and a template `web`."""
    async with serving(qemu_settings(tmp_path / "data", migrated_db_url)) as q:
        yield q
