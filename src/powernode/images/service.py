"""Registering boot artifacts and finding them again.

A build uploads each file into the content store (by sha256, verified), then registers the
artifact: one row per (template, arch, format, build inputs). Registering the same build again
returns the existing row, so a retried `image build` is harmless. Every registration is a
`image.registered` fleet event.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.errors import Conflict, NotFound
from powernode.events.log import EventContext, record_event
from powernode.images.models import BootArtifact
from powernode.images.spec import ARCHES, Format
from powernode.modules.store import ContentStore
from powernode.templates.service import get_template

_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class ArtifactFile(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    size: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _clean(cls, value: str) -> str:
        if not _NAME.match(value) or any(p in (".", "..") for p in value.split("/")):
            raise ValueError("a relative file name of letters, digits, '.', '_', '-' and '/'")
        return value


class ArtifactIn(BaseModel):
    template: str = Field(description="Template name or id.")
    template_version: int = Field(ge=0)
    arch: str = Field(pattern="^(amd64|arm64)$")
    format: Format
    inputs_digest: str = Field(pattern="^sha256:[0-9a-f]{64}$")
    kernel_version: str = Field(min_length=1, max_length=100)
    digest: str = Field(pattern="^sha256:[0-9a-f]{64}$")
    files: list[ArtifactFile] = Field(min_length=1, max_length=10_000)
    details: dict[str, Any] = Field(default_factory=dict)


class ArtifactOut(BaseModel):
    id: uuid.UUID
    template_id: uuid.UUID
    template: str
    template_version: int
    arch: str
    format: str
    inputs_digest: str
    kernel_version: str
    digest: str
    size: int
    files: list[dict[str, Any]]
    details: dict[str, Any]
    created_by: str
    created_at: dt.datetime


def artifact_out(row: BootArtifact, template_name: str) -> ArtifactOut:
    return ArtifactOut(
        id=row.id,
        template_id=row.template_id,
        template=template_name,
        template_version=row.template_version,
        arch=row.arch,
        format=row.format,
        inputs_digest=row.inputs_digest,
        kernel_version=row.kernel_version,
        digest=row.digest,
        size=row.size,
        files=row.files,
        details=row.details,
        created_by=row.created_by,
        created_at=row.created_at,
    )


async def register(
    session: AsyncSession,
    store: ContentStore,
    ctx: EventContext,
    body: ArtifactIn,
    *,
    now: dt.datetime,
) -> tuple[BootArtifact, str, bool]:
    """(row, template name, created): refused while any file's content is not uploaded."""
    template = await get_template(session, body.template)
    missing = [f.sha256 for f in body.files if not store.has(f.sha256)]
    if missing:
        raise Conflict(
            f"{len(missing)} file(s) of this artifact are not uploaded yet; PUT them to "
            "/api/v1/images/blobs/{sha256} first",
            missing=missing,
        )
    for f in body.files:
        actual = store.path(f.sha256).stat().st_size
        if actual != f.size:
            raise Conflict(f"{f.name}: stored content is {actual} bytes, not {f.size}")
    if body.format != Format.BOOTC and body.digest != f"sha256:{body.files[0].sha256}":
        raise Conflict("digest must be the sha256 of the first (main) file")
    existing = await session.scalar(
        select(BootArtifact).where(
            BootArtifact.template_id == template.id,
            BootArtifact.arch == body.arch,
            BootArtifact.format == body.format.value,
            BootArtifact.inputs_digest == body.inputs_digest,
        )
    )
    if existing is not None:
        if existing.digest != body.digest:
            raise Conflict(
                f"this build ({body.inputs_digest}) is registered with digest {existing.digest}, "
                f"not {body.digest}: the build is not reproducible"
            )
        return existing, template.name, False
    row = BootArtifact(
        template_id=template.id,
        template_version=body.template_version,
        inputs_digest=body.inputs_digest,
        arch=body.arch,
        format=body.format.value,
        kernel_version=body.kernel_version,
        digest=body.digest,
        size=sum(f.size for f in body.files),
        files=[f.model_dump() for f in body.files],
        details=body.details,
        created_by=ctx.actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="image.registered",
        subject_type="boot_artifact",
        subject_id=row.id,
        payload={
            "template": template.name,
            "arch": row.arch,
            "format": row.format,
            "digest": row.digest,
            "size": row.size,
            "inputs_digest": row.inputs_digest,
        },
    )
    return row, template.name, True


async def newest(
    session: AsyncSession, template_id: uuid.UUID, arch: str, fmt: str
) -> BootArtifact | None:
    """The most recently registered `fmt` artifact of a template for `arch`."""
    result: BootArtifact | None = await session.scalar(
        select(BootArtifact)
        .where(
            BootArtifact.template_id == template_id,
            BootArtifact.arch == arch,
            BootArtifact.format == fmt,
        )
        .order_by(BootArtifact.created_at.desc(), BootArtifact.id.desc())
        .limit(1)
    )
    return result


async def latest(
    session: AsyncSession, template_ref: str | uuid.UUID, arch: str, fmt: Format
) -> tuple[BootArtifact, str]:
    template = await get_template(session, template_ref)
    if arch not in ARCHES:
        raise NotFound(f"unknown architecture {arch!r}")
    row = await newest(session, template.id, arch, fmt.value)
    if row is None:
        raise NotFound(
            f"no {fmt.value} artifact for template {template.name} ({arch}); "
            f"run `powernode image build {template.name} --arch {arch}`"
        )
    return row, template.name


async def is_registered_file(session: AsyncSession, sha256: str) -> bool:
    """Whether `sha256` is a file of some registered boot artifact (only those are served
    without a token: module content is not)."""
    rows = await session.scalars(select(BootArtifact.files))
    return any(f.get("sha256") == sha256 for files in rows for f in files)
