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
from powernode.providers.service import (
    AccountCreate,
    AccountOut,
    AccountUpdate,
    InstanceTypeCreate,
    InstanceTypeOut,
    RegionCreate,
    RegionOut,
    ZoneCreate,
    ZoneOut,
)
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


@router.get("/{account}/regions")
async def list_regions(
    session: SessionDep, _: Reader, account: str, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[RegionOut]:
    page = await service.list_regions(session, account, limit=limit, cursor=cursor)
    return PageOut(
        items=[RegionOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.post("/{account}/regions", status_code=status.HTTP_201_CREATED)
async def add_region(
    session: SessionDep, caller: ProviderAdmin, account: str, spec: RegionCreate
) -> RegionOut:
    row = await service.add_region(session, caller.ctx, account, spec)
    await commit(session)
    return RegionOut.model_validate(row)


@router.get("/{account}/regions/{region}/zones")
async def list_zones(
    session: SessionDep,
    _: Reader,
    account: str,
    region: str,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> PageOut[ZoneOut]:
    page = await service.list_zones(session, account, region, limit=limit, cursor=cursor)
    return PageOut(
        items=[ZoneOut.model_validate(z) for z in page.items], next_cursor=page.next_cursor
    )


@router.post("/{account}/regions/{region}/zones", status_code=status.HTTP_201_CREATED)
async def add_zone(
    session: SessionDep, caller: ProviderAdmin, account: str, region: str, spec: ZoneCreate
) -> ZoneOut:
    row = await service.add_zone(session, caller.ctx, account, region, spec)
    await commit(session)
    return ZoneOut.model_validate(row)


@router.get("/{account}/instance-types")
async def list_instance_types(
    session: SessionDep, _: Reader, account: str, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[InstanceTypeOut]:
    page = await service.list_instance_types(session, account, limit=limit, cursor=cursor)
    return PageOut(
        items=[InstanceTypeOut.model_validate(t) for t in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/{account}/instance-types", status_code=status.HTTP_201_CREATED)
async def add_instance_type(
    session: SessionDep, caller: ProviderAdmin, account: str, spec: InstanceTypeCreate
) -> InstanceTypeOut:
    row = await service.add_instance_type(session, caller.ctx, account, spec)
    await commit(session)
    return InstanceTypeOut.model_validate(row)
