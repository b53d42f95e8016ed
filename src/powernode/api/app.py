"""The ASGI application: operator API under /api/v1, /healthz and /readyz."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from powernode import __version__
from powernode.api import problems
from powernode.api.middleware import CorrelationMiddleware
from powernode.api.routes import events, instances, nodes, providers, tasks, templates, tokens
from powernode.clock import Clock, SystemClock
from powernode.db.engine import Database
from powernode.db.migrate import current_revision, head_revision
from powernode.settings import Settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; the database engine is opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings.effective_database_url, pool_size=settings.db_pool_size)
        try:
            yield
        finally:
            await app.state.db.dispose()

    app = FastAPI(
        title="powernode",
        version=__version__,
        description="Fleet control plane operator API. Authenticate with `Authorization: Bearer "
        "<token>`; errors are RFC 9457 problem documents.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.add_middleware(CorrelationMiddleware)
    problems.install(app)

    api = APIRouter(prefix=API_PREFIX, responses=problems.PROBLEM_RESPONSES)
    for module in (nodes, instances, tasks, templates, providers, tokens, events):
        api.include_router(module.router)
    app.include_router(api)

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
