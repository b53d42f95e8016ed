"""Pure-ASGI middleware: a correlation id per request (taken from X-Correlation-ID when it is a
UUID), exposed to handlers as `request.state.correlation_id` and echoed in the response."""

from __future__ import annotations

import contextlib
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powernode.ids import new_id

HEADER = "x-correlation-id"


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = new_id()
        for name, value in scope["headers"]:
            if name == HEADER.encode():
                with contextlib.suppress(ValueError):  # not a UUID: keep the fresh one
                    correlation_id = uuid.UUID(value.decode("latin-1"))
                break
        scope.setdefault("state", {})["correlation_id"] = correlation_id

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = str(correlation_id)
            await send(message)

        await self.app(scope, receive, send_with_header)
