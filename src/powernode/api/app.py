"""The ASGI application: operator API under /api/v1, /healthz and /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from powernode import __version__
from powernode.api import metrics, problems
from powernode.api.middleware import CorrelationMiddleware
from powernode.api.node.app import create_node_app
from powernode.api.routes import (
    catalog,
    compliance,
    enrollment,
    events,
    instances,
    modules,
    nodes,
    providers,
    tasks,
    templates,
    tokens,
)
from powernode.clock import Clock, SystemClock
from powernode.db.engine import Database
from powernode.db.migrate import current_revision, head_revision
from powernode.events.stream import EventBroker
from powernode.fleet.claims import TaskWaiters
from powernode.fleet.heartbeats import HeartbeatBuffer
from powernode.modules.store import ContentStore
from powernode.pki.runtime import RevocationCache, open_ca
from powernode.providers.runtime import ProviderRuntime
from powernode.settings import Settings
from powernode.worker.leader import election_for
from powernode.worker.runner import Worker

API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; the database engine is opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings.effective_database_url, pool_size=settings.db_pool_size)
        app.state.broker = EventBroker(app.state.db)
        await app.state.broker.start()
        await _start_node_side(app, settings)
        jobs = []
        if settings.runs_jobs_in_serve:
            worker = Worker(
                app.state.db,
                settings,
                app.state.clock,
                election_for(settings.effective_database_url, settings.data_dir),
            )
            jobs.append(asyncio.create_task(worker.run_forever(), name="embedded-worker"))
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await app.state.heartbeats.stop()
            await app.state.broker.stop()
            await app.state.db.dispose()

    app = FastAPI(
        title="powernode",
        version=__version__,
        description="Fleet control plane operator API. Authenticate with `Authorization: Bearer "
        "<token>`; errors are RFC 9457 problem documents.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.store = ContentStore(settings.data_dir / "content")
    app.state.node_app = create_node_app()
    app.add_middleware(CorrelationMiddleware)
    metrics.install(app)
    problems.install(app)

    api = APIRouter(prefix=API_PREFIX, responses=problems.PROBLEM_RESPONSES)
    routers = (
        nodes,
        instances,
        tasks,
        templates,
        providers,
        catalog,
        modules,
        tokens,
        events,
        compliance,
        enrollment,
    )
    for module in routers:
        api.include_router(module.router)
    app.include_router(api)
    _mount_docs(app)

    @app.get("/healthz", tags=["health"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """The database answers and its schema is at the head migration."""
        db: Database = request.app.state.db
        head = head_revision()
        try:
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await current_revision(db.engine)
        except Exception as exc:
            return JSONResponse(
                {"status": "unavailable", "database": "unreachable", "error": type(exc).__name__},
                status_code=503,
            )
        ready = current == head
        return JSONResponse(
            {
                "status": "ok" if ready else "unavailable",
                "database": "ok",
                "migration": current,
                "head": head,
            },
            status_code=200 if ready else 503,
        )

    return app


async def _start_node_side(app: FastAPI, settings: Settings) -> None:
    """The state the node API shares with the operator API: the CA, heartbeats, task waiters."""
    state = app.state
    state.ca = await open_ca(state.db, settings, create=True)
    state.heartbeats = HeartbeatBuffer(state.db, state.clock, settings)
    await state.heartbeats.start()
    state.task_waiters = TaskWaiters()
    state.broker.listeners.append(state.task_waiters.on_events)
    state.revocations = RevocationCache(state.db)
    state.providers = ProviderRuntime(state.db, settings, state.ca, state.revocations)
    node_state = state.node_app.state
    for name in ("db", "clock", "ca", "heartbeats", "task_waiters", "revocations", "broker"):
        setattr(node_state, name, getattr(state, name))
    node_state.settings = settings


def _mount_docs(app: FastAPI) -> None:
    """Interactive docs at /api/v1/docs with Swagger UI served from the installed package, so
    they work on an air-gapped control plane (FastAPI's default loads them from a CDN)."""
    static = f"{API_PREFIX}/docs/static"
    app.mount(static, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get(f"{API_PREFIX}/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{API_PREFIX}/openapi.json",
            title="powernode API",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
        )
