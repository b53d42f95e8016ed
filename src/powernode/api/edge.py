"""What every operator API request passes before its handler runs, in this order: the caller is
authenticated and authorized for the matched route (401, 403), then text holding a NUL
character is refused (422 naming the field).

Authorization comes first so that a caller without a token hears 401, and a role without the
permission 403, whatever else is wrong with the request. The route's `Require` dependency would
decide that in time for everything but the body: FastAPI decodes a JSON body before it solves
any dependency, so a malformed body would be answered 422 before the caller was even known.
`edge` (a dependency of the whole /api/v1 router) therefore checks every permission the route
requires, and `authorize_unparsed` does the same for the refusals FastAPI raises before any
dependency runs (`problems` calls it before answering them). Both read the permissions from the
route's `Require` dependencies, so a route declares its permission once.

NUL: PostgreSQL cannot store U+0000 in text or jsonb and fails the statement, which would
surface as a 500. One check over the decoded request (path and query parameters and the JSON
body at any depth) covers every field, including the free-form documents (node spec, provider
settings, task payloads, labels) that a constrained `str` type on the models would miss.
`problems` maps the database's own refusal to 422 as a backstop for the other listeners (/v2,
/boot/v1, the node API).
"""

from __future__ import annotations

import email.message
from typing import Any

from fastapi import Request
from fastapi.dependencies.models import Dependant
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.api.deps import Require, SessionDep, authenticated
from powernode.db.engine import Database
from powernode.errors import Invalid

NUL = "\x00"


def requirements(route: Any) -> list[Require]:
    """Every `Require` dependency of `route`, at any depth; none for a route that is public."""
    found: list[Require] = []
    dependant: Dependant | None = getattr(route, "dependant", None)
    stack = [dependant] if dependant is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current.call, Require):
            found.append(current.call)
        stack.extend(reversed(current.dependencies))  # in declaration order
    return found


async def _authorize(request: Request, required: list[Require], session: AsyncSession) -> None:
    caller = await authenticated(request, session)
    for requirement in required:
        caller.require(*requirement.permissions(request))
    request.state.authorized = True


def _authorized(request: Request) -> bool:
    return bool(getattr(request.state, "authorized", False))


async def authorize_unparsed(request: Request) -> None:
    """Authorize a request FastAPI refused before its dependencies ran (a body it could not
    parse or validate), in a session of its own; raises Unauthorized or Forbidden."""
    required = requirements(request.scope.get("route"))
    if not required or _authorized(request):
        return
    db: Database = request.app.state.db
    async with db.read_sessions() as session:
        await _authorize(request, required, session)


def _is_json(content_type: str | None) -> bool:
    # The media types FastAPI decodes as JSON (fastapi.routing.get_request_handler).
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def nul_field(document: Any, path: str = "") -> str | None:
    """The dotted path (as 422 documents name fields) of a string in `document` that holds a
    NUL, or of the object whose key does; None when there is none."""
    stack: list[tuple[str, Any]] = [(path, document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return where or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if NUL in str(key):
                    return where or "body"
                stack.append((f"{where}.{key}" if where else str(key), item))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}" if where else str(i), v) for i, v in enumerate(value))
    return None


def _refuse(field: str) -> Invalid:
    return Invalid(
        f"{field} contains a NUL character (\\u0000), which cannot be stored; remove it",
        field=field,
    )


async def refuse_nul(request: Request) -> None:
    """Invalid naming a path parameter, query parameter or JSON body field that holds NUL."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            raise _refuse(name)
    for name, value in request.query_params.multi_items():
        if NUL in value:
            raise _refuse(name)
    # Only a body FastAPI has read and decoded already (Request caches both), never one a
    # route streams: a route with a body field and a JSON media type.
    has_body = getattr(request.scope.get("route"), "body_field", None) is not None
    if has_body and _is_json(request.headers.get("content-type")) and await request.body():
        field = nul_field(await request.json())
        if field is not None:
            raise _refuse(field)


async def edge(request: Request, session: SessionDep) -> None:
    """The dependency of every /api/v1 route: authorize, then refuse NUL characters."""
    required = requirements(request.scope.get("route"))
    if required and not _authorized(request):
        await _authorize(request, required, session)
    await refuse_nul(request)
