"""Provider catalogs: the regions, zones and instance types of an account."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, Invalid, NotFound
from powernode.events.log import EventContext, record_event
from powernode.fleet.models import Node
from powernode.fleet.states import Arch
from powernode.providers.models import InstanceType, ProviderAccount, Region, Zone
from powernode.providers.service import get_account
from powernode.schemas import Name


class RegionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    display_name: str | None = Field(default=None, max_length=200)


class RegionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_account_id: uuid.UUID
    name: str
    display_name: str | None


class ZoneCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class ZoneOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    region_id: uuid.UUID
    name: str


class InstanceTypeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    vcpus: int = Field(ge=1, le=1024)
    memory_mib: int = Field(ge=64, le=64 * 1024 * 1024)
    arch: Arch = Arch.AMD64


class InstanceTypeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_account_id: uuid.UUID
    name: str
    vcpus: int
    memory_mib: int
    arch: Arch


async def _catalog_event(
    session: AsyncSession,
    ctx: EventContext,
    account: ProviderAccount,
    what: str,
    name: str,
    change: str = "added",
) -> None:
    await record_event(
        session,
        ctx,
        kind=f"provider_account.{what}_{change}",
        subject_type="provider_account",
        subject_id=account.id,
        payload={what: name},
    )


async def add_region(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, spec: RegionCreate
) -> Region:
    account = await get_account(session, ref)
    if await session.scalar(
        select(Region.id).where(Region.provider_account_id == account.id, Region.name == spec.name)
    ):
        raise Conflict(f"provider account {account.name} already has region {spec.name!r}")
    row = Region(provider_account_id=account.id, name=spec.name, display_name=spec.display_name)
    session.add(row)
    await session.flush()
    await _catalog_event(session, ctx, account, "region", spec.name)
    return row


async def list_regions(
    session: AsyncSession, ref: str | uuid.UUID, *, limit: int, cursor: str | None
) -> Page[Region]:
    account = await get_account(session, ref)
    stmt = select(Region).where(Region.provider_account_id == account.id)
    return await paginate(session, stmt, Region.id, limit=limit, cursor=cursor)


async def _region(
    session: AsyncSession,
    account: ProviderAccount,
    region: str,
    *,
    missing: type[Invalid] | type[NotFound] = Invalid,
) -> Region:
    row = await session.scalar(
        select(Region).where(Region.provider_account_id == account.id, Region.name == region)
    )
    if row is None:
        raise missing(f"provider account {account.name} has no region {region!r}", field="region")
    return row


async def add_zone(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, region: str, spec: ZoneCreate
) -> Zone:
    account = await get_account(session, ref)
    parent = await _region(session, account, region)
    if await session.scalar(
        select(Zone.id).where(Zone.region_id == parent.id, Zone.name == spec.name)
    ):
        raise Conflict(f"region {region} already has zone {spec.name!r}")
    row = Zone(region_id=parent.id, name=spec.name)
    session.add(row)
    await session.flush()
    await _catalog_event(session, ctx, account, "zone", f"{region}/{spec.name}")
    return row


async def list_zones(
    session: AsyncSession, ref: str | uuid.UUID, region: str, *, limit: int, cursor: str | None
) -> Page[Zone]:
    account = await get_account(session, ref)
    parent = await _region(session, account, region)
    stmt = select(Zone).where(Zone.region_id == parent.id)
    return await paginate(session, stmt, Zone.id, limit=limit, cursor=cursor)


async def add_instance_type(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, spec: InstanceTypeCreate
) -> InstanceType:
    account = await get_account(session, ref)
    if await session.scalar(
        select(InstanceType.id).where(
            InstanceType.provider_account_id == account.id, InstanceType.name == spec.name
        )
    ):
        raise Conflict(f"provider account {account.name} already has instance type {spec.name!r}")
    row = InstanceType(
        provider_account_id=account.id,
        name=spec.name,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        arch=str(spec.arch),
    )
    session.add(row)
    await session.flush()
    await _catalog_event(session, ctx, account, "instance_type", spec.name)
    return row


async def list_instance_types(
    session: AsyncSession, ref: str | uuid.UUID, *, limit: int, cursor: str | None
) -> Page[InstanceType]:
    account = await get_account(session, ref)
    stmt = select(InstanceType).where(InstanceType.provider_account_id == account.id)
    return await paginate(session, stmt, InstanceType.id, limit=limit, cursor=cursor)


async def remove_region(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, region: str
) -> None:
    """Remove a region and its zones, unless a node is placed in it."""
    account = await get_account(session, ref)
    row = await _region(session, account, region, missing=NotFound)
    users = await session.scalar(select(func.count()).where(Node.region_id == row.id))
    if users:
        raise Conflict(f"region {region} has {users} node(s); move or delete them first")
    await session.delete(row)
    await _catalog_event(session, ctx, account, "region", region, "removed")


async def remove_zone(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, region: str, zone: str
) -> None:
    account = await get_account(session, ref)
    parent = await _region(session, account, region, missing=NotFound)
    row = await session.scalar(select(Zone).where(Zone.region_id == parent.id, Zone.name == zone))
    if row is None:
        raise NotFound(f"region {region} has no zone {zone!r}")
    users = await session.scalar(select(func.count()).where(Node.zone_id == row.id))
    if users:
        raise Conflict(f"zone {region}/{zone} has {users} node(s); move or delete them first")
    await session.delete(row)
    await _catalog_event(session, ctx, account, "zone", f"{region}/{zone}", "removed")


async def remove_instance_type(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, name: str
) -> None:
    account = await get_account(session, ref)
    row = await session.scalar(
        select(InstanceType).where(
            InstanceType.provider_account_id == account.id, InstanceType.name == name
        )
    )
    if row is None:
        raise NotFound(f"provider account {account.name} has no instance type {name!r}")
    await session.delete(row)
    await _catalog_event(session, ctx, account, "instance_type", name, "removed")
