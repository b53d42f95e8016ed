"""Template service: named, ordered module stacks."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.crud import check_version, get_by_ref
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict
from powernode.events.log import EventContext, Severity, record_event
from powernode.fleet.kinds import ModuleRef
from powernode.fleet.models import Node
from powernode.schemas import Name, Version
from powernode.templates.models import Template, TemplateModule


def _unique_modules(value: list[ModuleRef] | None) -> list[ModuleRef] | None:
    if value is not None:
        names = [m.name for m in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"module(s) listed more than once: {', '.join(dupes)}")
    return value


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: str = Field(default="", max_length=2000)
    modules: list[ModuleRef] = Field(
        default_factory=list, description="Module versions, lowest layer first."
    )

    _check = field_validator("modules")(_unique_modules)


class TemplateUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version
    description: str | None = Field(default=None, max_length=2000)
    modules: list[ModuleRef] | None = None

    _check = field_validator("modules")(_unique_modules)


class TemplateOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    modules: list[ModuleRef]
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int

    @classmethod
    def of(cls, row: Template) -> TemplateOut:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            modules=[ModuleRef(name=m.module_name, version=m.module_version) for m in row.modules],
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=row.version,
        )


def _stack(modules: list[ModuleRef]) -> list[TemplateModule]:
    return [
        TemplateModule(position=i, module_name=m.name, module_version=m.version)
        for i, m in enumerate(modules)
    ]


async def create_template(
    session: AsyncSession, ctx: EventContext, spec: TemplateCreate
) -> Template:
    if await session.scalar(select(Template.id).where(Template.name == spec.name)) is not None:
        raise Conflict(f"a template named {spec.name!r} already exists")
    now = ctx.clock.now()
    row = Template(
        name=spec.name,
        description=spec.description,
        created_at=now,
        updated_at=now,
        modules=_stack(spec.modules),
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="template.created",
        subject_type="template",
        subject_id=row.id,
        payload={"name": row.name, "modules": [m.model_dump() for m in spec.modules]},
    )
    return row


async def get_template(session: AsyncSession, ref: str | uuid.UUID) -> Template:
    return await get_by_ref(session, Template, ref, what="template", name_column=Template.name)


async def list_templates(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> Page[Template]:
    return await paginate(session, select(Template), Template.id, limit=limit, cursor=cursor)


async def update_template(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, patch: TemplateUpdate
) -> Template:
    row = await get_template(session, ref)
    check_version(row, patch.version, f"template {row.name}")
    changes: dict[str, object] = {}
    if patch.description is not None and patch.description != row.description:
        row.description = patch.description
        changes["description"] = patch.description
    if patch.modules is not None:
        row.modules = _stack(patch.modules)
        changes["modules"] = [m.model_dump() for m in patch.modules]
    if changes:
        row.updated_at = ctx.clock.now()
        await session.flush()
        await record_event(
            session,
            ctx,
            kind="template.updated",
            subject_type="template",
            subject_id=row.id,
            payload=changes,
        )
    return row


async def delete_template(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, version: int | None
) -> None:
    row = await get_template(session, ref)
    check_version(row, version, f"template {row.name}")
    users = await session.scalar(select(func.count()).where(Node.template_id == row.id))
    if users:
        raise Conflict(f"template {row.name} is used by {users} node(s); move them off it first")
    await record_event(
        session,
        ctx,
        kind="template.deleted",
        subject_type="template",
        subject_id=row.id,
        severity=Severity.CRITICAL,
        payload={"name": row.name},
    )
    await session.delete(row)
