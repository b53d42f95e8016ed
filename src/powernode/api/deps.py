"""Request dependencies: the database session, the caller and its permissions, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.auth.roles import Permission, allows
from powernode.auth.tokens import Principal, authenticate, touch_token
from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.errors import Forbidden, Unauthorized
from powernode.events.log import EventContext
from powernode.ids import new_id
from powernode.modules.store import ContentStore

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; reads use the read-only factory (no write lock on SQLite)."""
    db: Database = request.app.state.db
    factory = db.read_sessions if request.method in _READ_METHODS else db.sessions
    async with factory() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(_session)]

_bearer = HTTPBearer(auto_error=False, description="An API token: `powernode token create`.")


@dataclass(frozen=True)
class Caller:
    """The authenticated principal and the event context its actions are recorded under."""

    principal: Principal
    ctx: EventContext

    def require(self, permission: Permission) -> None:
        if not allows(self.principal.role, permission):
            raise Forbidden(
                f"role {self.principal.role} may not {permission.replace('_', ' ')}; "
                "ask an admin for a token with a role that may",
                required_permission=str(permission),
            )


def require(permission: Permission) -> Callable[..., Coroutine[Any, Any, Caller]]:
    """A dependency: the caller, if its token is valid and its role grants `permission`."""

    async def dependency(
        request: Request,
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthorized("this endpoint needs a bearer token: Authorization: Bearer pn_...")
        clock: Clock = request.app.state.clock
        principal = await authenticate(session, credentials.credentials, clock)
        if principal.last_used_stale:
            # Its own short write transaction; first end ours, which may hold SQLite's lock.
            await session.rollback()
            db: Database = request.app.state.db
            async with db.transaction() as writer:
                await touch_token(writer, principal.id, clock.now())
        request.state.actor = principal.actor
        caller = Caller(
            principal=principal,
            ctx=EventContext(
                actor=principal.actor,
                correlation_id=getattr(request.state, "correlation_id", None) or new_id(),
                clock=clock,
            ),
        )
        caller.require(permission)
        return caller

    return dependency


Reader = Annotated[Caller, Depends(require(Permission.READ))]
Operator = Annotated[Caller, Depends(require(Permission.OPERATE))]
TokenAdmin = Annotated[Caller, Depends(require(Permission.MANAGE_TOKENS))]
ProviderAdmin = Annotated[Caller, Depends(require(Permission.MANAGE_PROVIDERS))]

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (1 to 1000).")]
Cursor = Annotated[
    str | None,
    Query(max_length=64, description="`next_cursor` of the previous page."),
]
ExpectedVersion = Annotated[
    int | None,
    Query(ge=1, description="Refuse with 409 unless this is the current version."),
]


def _store(request: Request) -> ContentStore:
    store: ContentStore = request.app.state.store
    return store


StoreDep = Annotated[ContentStore, Depends(_store)]
