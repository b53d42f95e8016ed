"""Provider accounts and their catalogs (regions, zones, instance types).

Credentials never enter the database: an account holds `credentials_ref`, a pointer such as
`env:AWS_PROFILE_PROD`, `file:/etc/powernode/gcp.json` or `vault:secret/data/azure`, and settings
that look like secrets are refused.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.crud import check_version, get_by_ref
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.models import Node
from powernode.providers.models import ProviderAccount, ProviderKind
from powernode.schemas import Name, Version

CREDENTIALS_REF_RE = r"^(env|file|vault|secret):[^\s]{1,490}$"
_SECRET_KEY_RE = re.compile(
    r"secret|passw|token|private.?key|access.?key|api.?key|credential", re.IGNORECASE
)


def _no_secrets(settings: dict[str, Any], path: str = "settings") -> dict[str, Any]:
    for key, value in settings.items():
        if _SECRET_KEY_RE.search(key):
            raise ValueError(
                f"{path}.{key} looks like a secret; store secrets outside powernode and point "
                "at them with credentials_ref (env:NAME, file:PATH or vault:PATH)"
            )
        if isinstance(value, dict):
            _no_secrets(value, f"{path}.{key}")
    return settings


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    kind: ProviderKind
    settings: dict[str, Any] = Field(default_factory=dict)
    credentials_ref: str | None = Field(default=None, pattern=CREDENTIALS_REF_RE)

    _check = field_validator("settings")(_no_secrets)


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version
    settings: dict[str, Any] | None = None
    credentials_ref: str | None = Field(default=None, pattern=CREDENTIALS_REF_RE)

    @field_validator("settings")
    @classmethod
    def _check(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else _no_secrets(value)


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    kind: ProviderKind
    settings: dict[str, Any]
    credentials_ref: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int


async def create_account(
    session: AsyncSession, ctx: EventContext, spec: AccountCreate
) -> ProviderAccount:
    if await session.scalar(select(ProviderAccount.id).where(ProviderAccount.name == spec.name)):
        raise Conflict(f"a provider account named {spec.name!r} already exists")
    now = ctx.clock.now()
    row = ProviderAccount(
        name=spec.name,
        kind=str(spec.kind),
        settings=spec.settings,
        credentials_ref=spec.credentials_ref,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="provider_account.created",
        subject_type="provider_account",
        subject_id=row.id,
        payload={"name": row.name, "kind": row.kind},
    )
    return row


async def get_account(session: AsyncSession, ref: str | uuid.UUID) -> ProviderAccount:
    return await get_by_ref(
        session, ProviderAccount, ref, what="provider account", name_column=ProviderAccount.name
    )


async def list_accounts(
    session: AsyncSession, *, kind: ProviderKind | None, limit: int, cursor: str | None
) -> Page[ProviderAccount]:
    stmt = select(ProviderAccount)
    if kind is not None:
        stmt = stmt.where(ProviderAccount.kind == str(kind))
    return await paginate(session, stmt, ProviderAccount.id, limit=limit, cursor=cursor)


async def update_account(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, patch: AccountUpdate
) -> ProviderAccount:
    row = await get_account(session, ref)
    check_version(row, patch.version, f"provider account {row.name}")
    changed: list[str] = []
    if patch.settings is not None and patch.settings != row.settings:
        row.settings = patch.settings
        changed.append("settings")
    if "credentials_ref" in patch.model_fields_set and patch.credentials_ref != row.credentials_ref:
        row.credentials_ref = patch.credentials_ref
        changed.append("credentials_ref")
    if changed:
        row.updated_at = ctx.clock.now()
        await session.flush()
        await record_event(
            session,
            ctx,
            kind="provider_account.updated",
            subject_type="provider_account",
            subject_id=row.id,
            payload={"changed": changed},
        )
    return row


async def delete_account(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, version: int | None
) -> None:
    row = await get_account(session, ref)
    check_version(row, version, f"provider account {row.name}")
    users = await session.scalar(select(func.count()).where(Node.provider_account_id == row.id))
    if users:
        raise Conflict(f"provider account {row.name} has {users} node(s); delete them first")
    await record_event(
        session,
        ctx,
        kind="provider_account.deleted",
        subject_type="provider_account",
        subject_id=row.id,
        severity=Severity.CRITICAL,
        payload={"name": row.name},
    )
    await session.delete(row)
