"""Provider catalogs: the regions, zones and instance types of an account."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.crud import check_version
from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, Invalid, NotFound
from powernode.events.log import EventContext, record_event
from powernode.fleet.models import Node
from powernode.fleet.states import Arch
from powernode.providers.models import InstanceType, ProviderAccount, Region, Zone
from powernode.providers.service import get_account
from powernode.schemas import Name, Version


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
    version: int


class RegionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version
    display_name: str | None = Field(default=None, max_length=200)


class ZoneCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class ZoneOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    region_id: uuid.UUID
    name: str
    version: int


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
    version: int


class InstanceTypeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Version
    vcpus: int | None = Field(default=None, ge=1, le=1024)
    memory_mib: int | None = Field(default=None, ge=64, le=64 * 1024 * 1024)
    arch: Arch | None = None


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


async def get_region(session: AsyncSession, ref: str | uuid.UUID, region: str) -> Region:
    return await _region(session, await get_account(session, ref), region, missing=NotFound)


async def update_region(
    session: AsyncSession, ctx: EventContext, ref: str | uuid.UUID, region: str, patch: RegionUpdate
) -> Region:
    account = await get_account(session, ref)
    row = await _region(session, account, region, missing=NotFound)
    check_version(row, patch.version, f"region {region}")
    if "display_name" in patch.model_fields_set and patch.display_name != row.display_name:
        row.display_name = patch.display_name
        await session.flush()
        await _catalog_event(session, ctx, account, "region", region, "updated")
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


async def _zone(session: AsyncSession, parent: Region, region: str, zone: str) -> Zone:
    row = await session.scalar(select(Zone).where(Zone.region_id == parent.id, Zone.name == zone))
    if row is None:
        raise NotFound(f"region {region} has no zone {zone!r}")
    return row


async def get_zone(session: AsyncSession, ref: str | uuid.UUID, region: str, zone: str) -> Zone:
    parent = await get_region(session, ref, region)
    return await _zone(session, parent, region, zone)


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


async def _instance_type(
    session: AsyncSession, account: ProviderAccount, name: str
) -> InstanceType:
    row = await session.scalar(
        select(InstanceType).where(
            InstanceType.provider_account_id == account.id, InstanceType.name == name
        )
    )
    if row is None:
        raise NotFound(f"provider account {account.name} has no instance type {name!r}")
    return row


async def get_instance_type(session: AsyncSession, ref: str | uuid.UUID, name: str) -> InstanceType:
    return await _instance_type(session, await get_account(session, ref), name)


async def update_instance_type(
    session: AsyncSession,
    ctx: EventContext,
    ref: str | uuid.UUID,
    name: str,
    patch: InstanceTypeUpdate,
) -> InstanceType:
    account = await get_account(session, ref)
    row = await _instance_type(session, account, name)
    check_version(row, patch.version, f"instance type {name}")
    changed = False
    for field in ("vcpus", "memory_mib", "arch"):
        value = getattr(patch, field)
        if value is not None and (str(value) if field == "arch" else value) != getattr(row, field):
            setattr(row, field, str(value) if field == "arch" else value)
            changed = True
    if changed:
        await session.flush()
        await _catalog_event(session, ctx, account, "instance_type", name, "updated")
    return row


async def remove_region(
    session: AsyncSession,
    ctx: EventContext,
    ref: str | uuid.UUID,
    region: str,
    version: int | None = None,
) -> None:
    """Remove a region and its zones, unless a node is placed in it."""
    account = await get_account(session, ref)
    row = await _region(session, account, region, missing=NotFound)
    check_version(row, version, f"region {region}")
    users = await session.scalar(select(func.count()).where(Node.region_id == row.id))
    if users:
        raise Conflict(f"region {region} has {users} node(s); move or delete them first")
    await session.delete(row)
    await _catalog_event(session, ctx, account, "region", region, "removed")


async def remove_zone(
    session: AsyncSession,
    ctx: EventContext,
    ref: str | uuid.UUID,
    region: str,
    zone: str,
    version: int | None = None,
) -> None:
    account = await get_account(session, ref)
    parent = await _region(session, account, region, missing=NotFound)
    row = await _zone(session, parent, region, zone)
    check_version(row, version, f"zone {region}/{zone}")
    users = await session.scalar(select(func.count()).where(Node.zone_id == row.id))
    if users:
        raise Conflict(f"zone {region}/{zone} has {users} node(s); move or delete them first")
    await session.delete(row)
    await _catalog_event(session, ctx, account, "zone", f"{region}/{zone}", "removed")


async def remove_instance_type(
    session: AsyncSession,
    ctx: EventContext,
    ref: str | uuid.UUID,
    name: str,
    version: int | None = None,
) -> None:
    account = await get_account(session, ref)
    row = await _instance_type(session, account, name)
    check_version(row, version, f"instance type {name}")
    await session.delete(row)
    await _catalog_event(session, ctx, account, "instance_type", name, "removed")
