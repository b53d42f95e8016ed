"""/api/v1/templates"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from powernode.api.deps import (
    Cursor,
    ExpectedVersion,
    Limit,
    Operator,
    Reader,
    SessionDep,
    StoreDep,
)
from powernode.db.crud import commit
from powernode.modules import service as modules_service
from powernode.modules.service import PreviewOut
from powernode.schemas import PageOut
from powernode.templates import service
from powernode.templates.service import TemplateCreate, TemplateOut, TemplateUpdate

router = APIRouter(prefix="/templates", tags=["templates"])


@router.get("")
async def list_templates(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[TemplateOut]:
    page = await service.list_templates(session, limit=limit, cursor=cursor)
    return PageOut(items=[TemplateOut.of(t) for t in page.items], next_cursor=page.next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_template(
    session: SessionDep, caller: Operator, spec: TemplateCreate
) -> TemplateOut:
    row = await service.create_template(session, caller.ctx, spec)
    await commit(session)
    return TemplateOut.of(row)


@router.get("/{template}")
async def get_template(session: SessionDep, _: Reader, template: str) -> TemplateOut:
    """A template by id or name."""
    return TemplateOut.of(await service.get_template(session, template))


@router.patch("/{template}")
async def update_template(
    session: SessionDep, caller: Operator, template: str, patch: TemplateUpdate
) -> TemplateOut:
    row = await service.update_template(session, caller.ctx, template, patch)
    await commit(session)
    return TemplateOut.of(row)


@router.delete("/{template}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_template(
    session: SessionDep, caller: Operator, template: str, version: ExpectedVersion = None
) -> Response:
    await service.delete_template(session, caller.ctx, template, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{template}/preview")
async def preview_template(
    session: SessionDep, store: StoreDep, _: Reader, template: str
) -> PreviewOut:
    """Resolve and compose without writing anything: layers, conflicts, footprint."""
    row = await service.get_template(session, template)
    composition = await modules_service.compose_template(session, store, row)
    return modules_service.preview_document(row, composition)


@router.get("/{template}/manifest")
async def template_manifest(
    session: SessionDep, store: StoreDep, _: Reader, template: str
) -> dict[str, Any]:
    """Every path of the composed tree, sorted, with metadata and digests (409 on conflicts)."""
    row = await service.get_template(session, template)
    composition = await modules_service.compose_template(session, store, row)
    return modules_service.manifest_document(row, composition)
