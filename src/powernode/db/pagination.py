"""Keyset (cursor) pagination over UUIDv7 primary keys.

Ids are time-ordered, so `ORDER BY id` is creation order and a page costs one index range scan
however deep the client has paged; the cursor is the last id of the previous page, opaque to
clients.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.errors import Invalid

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (ValueError, binascii.Error) as exc:
        raise Invalid(
            "cursor is not valid: pass the next_cursor value of a previous page unchanged",
            field="cursor",
        ) from exc


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    id_column: Any,
    *,
    limit: int,
    cursor: str | None,
    rows: bool = False,
    descending: bool = False,
) -> Page[Any]:
    """One page of `stmt` ordered by `id_column`, with the cursor for the next page.

    Items are ORM objects, or with `rows` the result rows of a column select (cheaper);
    `descending` pages newest first.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    if cursor:
        after = decode_cursor(cursor)
        stmt = stmt.where(id_column < after if descending else id_column > after)
    order = id_column.desc() if descending else id_column
    ordered = stmt.order_by(order).limit(limit + 1)
    if rows:  # Core execution: no ORM result processing for plain column selects
        found: Sequence[Any] = (await (await session.connection()).execute(ordered)).all()
    else:
        found = (await session.scalars(ordered)).all()
    has_more = len(found) > limit
    items = found[:limit]
    next_cursor = encode_cursor(items[-1].id) if has_more and items else None
    return Page(items=items, next_cursor=next_cursor)
