"""/api/v1/templates"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from powernode.api.deps import Cursor, ExpectedVersion, Limit, Operator, Reader, SessionDep
from powernode.db.crud import commit
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
