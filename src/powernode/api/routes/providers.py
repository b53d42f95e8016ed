"""/api/v1/provider-accounts and their catalogs."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from powernode.api.deps import (
    Cursor,
    ExpectedVersion,
    Limit,
    ProviderAdmin,
    Reader,
    SessionDep,
)
from powernode.db.crud import commit
from powernode.providers import service
from powernode.providers.models import ProviderKind
from powernode.providers.service import AccountCreate, AccountOut, AccountUpdate
from powernode.schemas import PageOut

router = APIRouter(prefix="/provider-accounts", tags=["provider accounts"])


@router.get("")
async def list_accounts(
    session: SessionDep,
    _: Reader,
    kind: ProviderKind | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[AccountOut]:
    page = await service.list_accounts(session, kind=kind, limit=limit, cursor=cursor)
    return PageOut(
        items=[AccountOut.model_validate(a) for a in page.items], next_cursor=page.next_cursor
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_account(
    session: SessionDep, caller: ProviderAdmin, spec: AccountCreate
) -> AccountOut:
    """Register an account; secrets stay outside, referenced by `credentials_ref`."""
    row = await service.create_account(session, caller.ctx, spec)
    await commit(session)
    return AccountOut.model_validate(row)


@router.get("/{account}")
async def get_account(session: SessionDep, _: Reader, account: str) -> AccountOut:
    return AccountOut.model_validate(await service.get_account(session, account))


@router.patch("/{account}")
async def update_account(
    session: SessionDep, caller: ProviderAdmin, account: str, patch: AccountUpdate
) -> AccountOut:
    row = await service.update_account(session, caller.ctx, account, patch)
    await commit(session)
    return AccountOut.model_validate(row)


@router.delete("/{account}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_account(
    session: SessionDep, caller: ProviderAdmin, account: str, version: ExpectedVersion = None
) -> Response:
    await service.delete_account(session, caller.ctx, account, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
