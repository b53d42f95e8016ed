"""Small helpers every service uses: lookup by id or name, version checks, commit."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from powernode.errors import Conflict, NotFound

M = TypeVar("M")


def parse_ref(ref: str | uuid.UUID) -> uuid.UUID | None:
    """`ref` as a UUID when it is one, else None (then it is a name)."""
    if isinstance(ref, uuid.UUID):
        return ref
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


async def get_by_ref(
    session: AsyncSession,
    model: type[M],
    ref: str | uuid.UUID,
    *,
    what: str,
    name_column: Any | None = None,
    for_update: bool = False,
) -> M:
    """The row whose id (or, when `name_column` is given, name) is `ref`, or NotFound."""
    as_id = parse_ref(ref)
    column = model.id if as_id is not None or name_column is None else name_column  # type: ignore[attr-defined]
    stmt = select(model).where(column == (as_id if as_id is not None else ref))
    if for_update:
        stmt = stmt.with_for_update()
    row = await session.scalar(stmt)
    if row is None:
        raise NotFound(f"{what} {ref} does not exist")
    return row


def check_version(entity: Any, expected: int | None, what: str) -> None:
    """Conflict when the client's `expected` version is not the current one."""
    if expected is not None and expected != entity.version:
        raise Conflict(
            f"{what} was changed by someone else: you sent version {expected}, the current "
            f"version is {entity.version}; fetch it again and retry",
            current_version=entity.version,
        )


LOST_RACE_ERRORS = (StaleDataError, IntegrityError)


def as_conflict(exc: StaleDataError | IntegrityError) -> Conflict:
    """The Conflict a lost race means: a stale version, or a duplicate created concurrently."""
    if isinstance(exc, StaleDataError):
        return Conflict(
            "the object was changed concurrently by another request; fetch it again and retry"
        )
    return Conflict(f"the change conflicts with existing data: {exc.orig}")


async def commit(session: AsyncSession) -> None:
    """Commit, turning lost races into Conflict instead of a server error."""
    try:
        await session.commit()
    except LOST_RACE_ERRORS as exc:
        await session.rollback()
        raise as_conflict(exc) from exc
