"""API tokens: creation (shown once), authentication, listing and revocation.

A token reads `pn_<id>_<secret>`. The id finds the row; only the SHA-256 of the secret is stored
(the secret has 256 bits of entropy, so a fast hash is enough) and compared in constant time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.auth.models import ApiToken
from powernode.auth.roles import Role
from powernode.clock import Clock
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, NotFound, Unauthorized
from powernode.events.log import EventContext, Severity, record_event

TOKEN_PREFIX = "pn"  # noqa: S105 - a public prefix, not a secret
_LAST_USED_GRANULARITY = dt.timedelta(minutes=1)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="What the token is for.")
    role: Role = Field(default=Role.VIEWER)
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3650, description="Days until expiry; none = never expires."
    )


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: Role
    token_id: str
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret token. Shown once; store it now.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's row id, its public id, name and role."""

    id: uuid.UUID
    token_id: str
    name: str
    role: Role
    last_used_stale: bool = False
    """Whether `last_used_at` is older than its granularity and should be touched."""

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(raw: str) -> tuple[str, str] | None:
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def create_token(
    session: AsyncSession, ctx: EventContext, spec: TokenCreate
) -> tuple[ApiToken, str]:
    """A new token row and its plaintext, which is never stored."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    now = ctx.clock.now()
    row = ApiToken(
        name=spec.name,
        role=str(spec.role),
        token_id=token_id,
        secret_hash=_hash(secret),
        created_at=now,
        created_by=ctx.actor,
        expires_at=now + dt.timedelta(days=spec.expires_in_days) if spec.expires_in_days else None,
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="token.created",
        subject_type="token",
        subject_id=row.id,
        payload={"name": spec.name, "role": str(spec.role), "token_id": token_id},
    )
    return row, f"{TOKEN_PREFIX}_{token_id}_{secret}"


async def authenticate(session: AsyncSession, raw: str, clock: Clock) -> Principal:
    """The principal for a bearer token, or Unauthorized saying why."""
    parsed = _split(raw)
    if parsed is None:
        raise Unauthorized("the bearer token is malformed: expected pn_<id>_<secret>")
    token_id, secret = parsed
    row = await session.scalar(select(ApiToken).where(ApiToken.token_id == token_id))
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise Unauthorized("the bearer token is not valid")
    now = clock.now()
    if row.revoked_at is not None:
        raise Unauthorized("the bearer token has been revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("the bearer token has expired: create a new one")
    # Coarse on purpose: a write per request would cost every GET a write transaction.
    stale = row.last_used_at is None or now - row.last_used_at > _LAST_USED_GRANULARITY
    return Principal(
        id=row.id,
        token_id=row.token_id,
        name=row.name,
        role=Role(row.role),
        last_used_stale=stale,
    )


async def touch_token(session: AsyncSession, token: uuid.UUID, now: dt.datetime) -> None:
    """Record that a token was used (in the caller's write transaction)."""
    await session.execute(update(ApiToken).where(ApiToken.id == token).values(last_used_at=now))


async def list_tokens(session: AsyncSession, *, limit: int, cursor: str | None) -> Page[ApiToken]:
    return await paginate(session, select(ApiToken), ApiToken.id, limit=limit, cursor=cursor)


async def get_token(session: AsyncSession, token: uuid.UUID | str) -> ApiToken:
    """A token by row id or by its public `token_id`."""
    column = ApiToken.id if isinstance(token, uuid.UUID) else ApiToken.token_id
    row = await session.scalar(select(ApiToken).where(column == token))
    if row is None:
        raise NotFound(f"token {token} does not exist")
    return row


async def revoke_token(
    session: AsyncSession, ctx: EventContext, token: uuid.UUID | str
) -> ApiToken:
    row = await get_token(session, token)
    if row.revoked_at is not None:
        raise Conflict(f"token {row.token_id} was already revoked at {row.revoked_at.isoformat()}")
    row.revoked_at = ctx.clock.now()
    await record_event(
        session,
        ctx,
        kind="token.revoked",
        subject_type="token",
        subject_id=row.id,
        severity=Severity.CRITICAL,
        payload={"name": row.name, "token_id": row.token_id},
    )
    return row


async def has_admin_token(session: AsyncSession, clock: Clock) -> bool:
    """Whether a usable admin token exists (decides whether `init` mints one)."""
    now = clock.now()
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.role == str(Role.ADMIN), ApiToken.revoked_at.is_(None))
    )
    return any(r.expires_at is None or r.expires_at > now for r in rows)
