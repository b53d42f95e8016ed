"""RFC 9457 problem details: the one place errors become HTTP responses.

Every refused request (a domain error, a validation error, an unknown route) is answered with
`application/problem+json` and recorded as an `api.refused` fleet event; unexpected errors become
a bare 500 problem with the correlation id and no stack trace. Every 422 lists the refused fields
in `errors: [{field, message}]`, whether request validation or a domain `Invalid` refused it.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from powernode.api.edge import authorize_unparsed
from powernode.db.crud import LOST_RACE_ERRORS, as_conflict
from powernode.db.engine import Database
from powernode.errors import Category, Invalid, PowernodeError
from powernode.events.log import EventContext, Severity, record_event
from powernode.ids import new_id

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"

STATUS_BY_CATEGORY: dict[Category, int] = {
    Category.NOT_FOUND: 404,
    Category.INVALID: 422,
    Category.CONFLICT: 409,
    Category.INVALID_TRANSITION: 409,
    Category.UNAUTHORIZED: 401,
    Category.FORBIDDEN: 403,
    Category.UNAVAILABLE: 503,
}


class FieldError(BaseModel):
    """One refused field of a 422 answer."""

    model_config = ConfigDict(extra="allow")

    field: str | None = Field(
        description="The field as a dotted path (`spec.env.HOME`, `body` for the whole body); "
        "null when the problem is with the request as a whole."
    )
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document; extension members vary by problem type."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI reference naming the problem type.")
    title: str
    status: int
    detail: str
    correlation_id: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="On 422: what was refused.")


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem_response("The request body could not be parsed."),
    401: _problem_response("No valid bearer token."),
    403: _problem_response("The token's role does not allow this action."),
    404: _problem_response("No such object."),
    409: _problem_response("Conflict: stale version, duplicate, or invalid transition."),
    422: _problem_response("The request is not valid; `errors` names the fields."),
    503: _problem_response("The database is unreachable; retry after `Retry-After` seconds."),
}


def problem(
    request: Request, status: int, title: str, detail: str, category: str, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:powernode:problem:{category}",
        "title": title,
        "status": status,
        "detail": detail,
        "correlation_id": str(getattr(request.state, "correlation_id", "")) or None,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def audit_refusal(request: Request, status: int, detail: str) -> None:
    """Record a refused request as a fleet event, in its own transaction."""
    db: Database | None = getattr(request.app.state, "db", None)
    if db is None:
        return
    ctx = EventContext(
        actor=getattr(request.state, "actor", None) or "anonymous",
        correlation_id=getattr(request.state, "correlation_id", None) or new_id(),
    )
    # The path and detail may quote what was refused, NUL included, which PostgreSQL's jsonb
    # cannot store: write it escaped rather than lose the event.
    try:
        async with db.transaction() as session:
            await record_event(
                session,
                ctx,
                kind="api.refused",
                subject_type="api",
                subject_id=None,
                severity=Severity.CRITICAL if status in (401, 403) else Severity.ROUTINE,
                payload={
                    "method": request.method,
                    "path": _storable(request.url.path),
                    "status": status,
                    "detail": _storable(detail[:500]),
                },
            )
    except Exception:  # auditing must not turn a 4xx into a 500
        log.exception("could not record refused request")


def _storable(text: str) -> str:
    return text.replace("\x00", "\\u0000")


def _field_name(error: dict[str, Any]) -> str:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        return "body"  # its loc ends in the character offset, which names no field
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def _field_errors(exc: PowernodeError) -> list[dict[str, Any]]:
    """A domain error's `errors`: its own list when it has one (every item completed with
    `field` and `message`), else its one `field` with its detail."""
    field = exc.extra.get("field")
    own = exc.extra.get("errors")
    if isinstance(own, list) and own:
        return [
            {"field": field, "message": exc.detail, **item}
            if isinstance(item, dict)
            else {"field": field, "message": str(item)}
            for item in own
        ]
    return [{"field": field, "message": exc.detail}]


# SQLSTATEs of text PostgreSQL cannot store: character_not_in_repertoire (a NUL in text),
# untranslatable_character (a \u0000 escape in jsonb).
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


def _unstorable_text(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in _UNSTORABLE_TEXT


def install(app: FastAPI) -> None:
    """Register the exception handlers on `app`."""

    @app.exception_handler(PowernodeError)
    async def _domain(request: Request, exc: PowernodeError) -> JSONResponse:
        status = STATUS_BY_CATEGORY[exc.category]
        await audit_refusal(request, status, exc.detail)
        extra = dict(exc.extra)
        if status == 422:
            extra["errors"] = _field_errors(exc)
        return problem(request, status, exc.title, exc.detail, str(exc.category), **extra)

    async def _lost_race(request: Request, exc: Exception) -> JSONResponse:
        # A flush inside a service lost a race (commit() covers the commit itself).
        assert isinstance(exc, LOST_RACE_ERRORS)
        return await _domain(request, as_conflict(exc))

    for error_type in LOST_RACE_ERRORS:
        app.add_exception_handler(error_type, _lost_race)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if _unstorable_text(exc):
            # The backstop for what api/edge.py does not see (the other listeners).
            return await _domain(
                request,
                Invalid(
                    "the request holds text the database cannot store, such as a NUL "
                    "character (\\u0000); remove it"
                ),
            )
        if not exc.connection_invalidated:
            return await _unexpected(request, exc)
        log.warning("database connection lost: %s", exc.orig)
        response = problem(
            request,
            503,
            "Service unavailable",
            "the database connection was lost; retry the request",
            "unavailable",
        )
        response.headers["Retry-After"] = "1"
        return response

    async def _refused_first(request: Request) -> JSONResponse | None:
        """401 or 403 for a request FastAPI refused before its dependencies could authorize
        it, so that a bad body never hides a missing token or permission (api/edge.py)."""
        try:
            await authorize_unparsed(request)
        except PowernodeError as exc:
            return await _domain(request, exc)
        except DBAPIError as exc:  # authenticating needs the database
            return await _database(request, exc)
        return None

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if refused := await _refused_first(request):
            return refused
        errors = [
            {"field": _field_name(err), "message": err.get("msg", "")} for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        await audit_refusal(request, 422, detail)
        return problem(request, 422, "Invalid input", detail, "invalid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # A body FastAPI could not read (400, 413) is refused after the caller's; a 405 is
        # not, since the route that matched the path requires what its other method needs.
        if exc.status_code != 405 and (refused := await _refused_first(request)):
            return refused
        detail = str(exc.detail)
        if exc.status_code < 500:
            await audit_refusal(request, exc.status_code, detail)
        title = HTTPStatus(exc.status_code).phrase
        return problem(request, exc.status_code, title, detail, "http")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(
            request,
            500,
            "Internal server error",
            "the server failed to handle this request; the correlation id finds it in the logs",
            "internal",
        )
