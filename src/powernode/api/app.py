"""The ASGI application: operator API under /api/v1, /healthz and /readyz."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from powernode import __version__
from powernode.api import metrics, problems
from powernode.api.deps import require
from powernode.api.edge import edge
from powernode.api.middleware import CorrelationMiddleware
from powernode.api.node.app import create_node_app
from powernode.api.routes import (
    catalog,
    compliance,
    distribution,
    enrollment,
    events,
    images,
    instances,
    modules,
    nodes,
    providers,
    signing,
    tasks,
    templates,
    tokens,
    trust,
)
from powernode.api.runtime import FleetRuntime
from powernode.auth.roles import Permission
from powernode.clock import Clock, SystemClock
from powernode.db.engine import Database
from powernode.db.migrate import current_revision, head_revision
from powernode.modules.store import ContentStore
from powernode.settings import Settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; the database engine is opened at startup and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = Database(settings.effective_database_url, pool_size=settings.db_pool_size)
        runtime = FleetRuntime(app, settings)
        await runtime.start_when_ready()
        try:
            yield
        finally:
            await runtime.stop()
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
    app.state.node_app.state.store = app.state.store  # /v2 serves from it on both listeners
    app.state.providers = None
    app.add_middleware(CorrelationMiddleware)
    metrics.install(app)
    problems.install(app)

    # `edge` runs before every other dependency of an operator route: see api/edge.py.
    api = APIRouter(
        prefix=API_PREFIX, responses=problems.PROBLEM_RESPONSES, dependencies=[Depends(edge)]
    )
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
        trust,
        signing,
        images,
    )
    for module in routers:
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(images.boot_router)
    distribution.mount(app, Depends(require(Permission.READ)), token_service=True)
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
