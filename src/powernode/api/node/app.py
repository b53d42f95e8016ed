"""The node API application. It shares the control plane's state (database, CA, heartbeat
buffer, task waiters) with the operator app, which owns their lifecycle; `serve` runs it on its
own TLS listener (see api/node/server.py)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from powernode import __version__
from powernode.api import problems
from powernode.api.middleware import CorrelationMiddleware
from powernode.api.node import routes
from powernode.api.routes import distribution
from powernode.api.runtime import require_runtime


def create_node_app() -> FastAPI:
    """The app; `attach_state` fills its state once the operator app has started."""
    app = FastAPI(
        title="powernode node API",
        version=__version__,
        description="What agents talk to: enrollment with a bootstrap token, then mutual TLS.",
        openapi_url="/node/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(CorrelationMiddleware)
    problems.install(app)
    app.include_router(routes.router)
    distribution.mount(app, Depends(require_runtime), Depends(routes._node_caller))
    return app
