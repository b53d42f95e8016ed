"""Request dependencies: the database session, the caller and its permissions, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Annotated

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

    def require(self, *permissions: Permission) -> None:
        """Forbidden naming the first of `permissions` the caller's role lacks."""
        for permission in permissions:
            if not allows(self.principal.role, permission):
                raise Forbidden(
                    f"role {self.principal.role} may not {permission.replace('_', ' ')}; "
                    "ask an admin for a token with a role that may",
                    required_permission=str(permission),
                )


async def authenticated(request: Request, session: AsyncSession) -> Caller:
    """The request's caller, authenticated once per request and kept in `request.state`."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None:
        return caller
    credentials = await _bearer(request)
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
    request.state.caller = caller
    return caller


@dataclass(frozen=True)
class Require:
    """A dependency: the caller, if its token is valid and its role grants `permission`.

    A lifecycle action route names its `system_events` (agent reports, lease outcomes): firing
    one of those, the `event` path parameter, also needs OVERRIDE. The permissions are data, not
    code in the handler, so `api.edge` can check them before FastAPI reads the request body.
    """

    permission: Permission
    system_events: frozenset[str] = frozenset()

    def permissions(self, request: Request) -> tuple[Permission, ...]:
        """What this request needs: the route's permission, then OVERRIDE for a system event."""
        if request.path_params.get("event") in self.system_events:
            return (self.permission, Permission.OVERRIDE)
        return (self.permission,)

    async def __call__(
        self,
        request: Request,
        session: SessionDep,
        # Unused here (`authenticated` reads the header) but it documents the bearer scheme.
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = await authenticated(request, session)
        caller.require(*self.permissions(request))
        return caller


def require(permission: Permission, *, system_events: Collection[str] = frozenset()) -> Require:
    """A dependency: the caller, if its token is valid and its role grants `permission`."""
    return Require(permission, frozenset(system_events))


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
