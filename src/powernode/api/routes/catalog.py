"""/api/v1/provider-accounts/{account}/regions, zones and instance-types."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from powernode.api.deps import Cursor, ExpectedVersion, Limit, ProviderAdmin, Reader, SessionDep
from powernode.db.crud import commit
from powernode.providers import catalog
from powernode.providers.catalog import (
    InstanceTypeCreate,
    InstanceTypeOut,
    InstanceTypeUpdate,
    RegionCreate,
    RegionOut,
    RegionUpdate,
    ZoneCreate,
    ZoneOut,
)
from powernode.schemas import PageOut

router = APIRouter(prefix="/provider-accounts", tags=["provider catalogs"])


@router.get("/{account}/regions")
async def list_regions(
    session: SessionDep, _: Reader, account: str, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[RegionOut]:
    page = await catalog.list_regions(session, account, limit=limit, cursor=cursor)
    return PageOut(
        items=[RegionOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.post("/{account}/regions", status_code=status.HTTP_201_CREATED)
async def add_region(
    session: SessionDep, caller: ProviderAdmin, account: str, spec: RegionCreate
) -> RegionOut:
    row = await catalog.add_region(session, caller.ctx, account, spec)
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
    page = await catalog.list_zones(session, account, region, limit=limit, cursor=cursor)
    return PageOut(
        items=[ZoneOut.model_validate(z) for z in page.items], next_cursor=page.next_cursor
    )


@router.post("/{account}/regions/{region}/zones", status_code=status.HTTP_201_CREATED)
async def add_zone(
    session: SessionDep, caller: ProviderAdmin, account: str, region: str, spec: ZoneCreate
) -> ZoneOut:
    row = await catalog.add_zone(session, caller.ctx, account, region, spec)
    await commit(session)
    return ZoneOut.model_validate(row)


@router.get("/{account}/instance-types")
async def list_instance_types(
    session: SessionDep, _: Reader, account: str, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[InstanceTypeOut]:
    page = await catalog.list_instance_types(session, account, limit=limit, cursor=cursor)
    return PageOut(
        items=[InstanceTypeOut.model_validate(t) for t in page.items],
        next_cursor=page.next_cursor,
    )


@router.post("/{account}/instance-types", status_code=status.HTTP_201_CREATED)
async def add_instance_type(
    session: SessionDep, caller: ProviderAdmin, account: str, spec: InstanceTypeCreate
) -> InstanceTypeOut:
    row = await catalog.add_instance_type(session, caller.ctx, account, spec)
    await commit(session)
    return InstanceTypeOut.model_validate(row)


@router.delete("/{account}/regions/{region}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_region(
    session: SessionDep,
    caller: ProviderAdmin,
    account: str,
    region: str,
    version: ExpectedVersion = None,
) -> Response:
    """Remove a region and its zones (refused while nodes are placed in it)."""
    await catalog.remove_region(session, caller.ctx, account, region, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{account}/regions/{region}/zones/{zone}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_zone(
    session: SessionDep,
    caller: ProviderAdmin,
    account: str,
    region: str,
    zone: str,
    version: ExpectedVersion = None,
) -> Response:
    await catalog.remove_zone(session, caller.ctx, account, region, zone, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{account}/instance-types/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_instance_type(
    session: SessionDep,
    caller: ProviderAdmin,
    account: str,
    name: str,
    version: ExpectedVersion = None,
) -> Response:
    await catalog.remove_instance_type(session, caller.ctx, account, name, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{account}/regions/{region}")
async def get_region(session: SessionDep, _: Reader, account: str, region: str) -> RegionOut:
    return RegionOut.model_validate(await catalog.get_region(session, account, region))


@router.patch("/{account}/regions/{region}")
async def update_region(
    session: SessionDep, caller: ProviderAdmin, account: str, region: str, patch: RegionUpdate
) -> RegionOut:
    """Change a region's display name (send the `version` you read)."""
    row = await catalog.update_region(session, caller.ctx, account, region, patch)
    await commit(session)
    return RegionOut.model_validate(row)


@router.get("/{account}/regions/{region}/zones/{zone}")
async def get_zone(session: SessionDep, _: Reader, account: str, region: str, zone: str) -> ZoneOut:
    return ZoneOut.model_validate(await catalog.get_zone(session, account, region, zone))


@router.get("/{account}/instance-types/{name}")
async def get_instance_type(
    session: SessionDep, _: Reader, account: str, name: str
) -> InstanceTypeOut:
    return InstanceTypeOut.model_validate(await catalog.get_instance_type(session, account, name))


@router.patch("/{account}/instance-types/{name}")
async def update_instance_type(
    session: SessionDep,
    caller: ProviderAdmin,
    account: str,
    name: str,
    patch: InstanceTypeUpdate,
) -> InstanceTypeOut:
    """Change an instance type's size or arch (send the `version` you read)."""
    row = await catalog.update_instance_type(session, caller.ctx, account, name, patch)
    await commit(session)
    return InstanceTypeOut.model_validate(row)
