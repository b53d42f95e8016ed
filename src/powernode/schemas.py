"""Field types shared by the API's request and response models."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field

T = TypeVar("T")

Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Lowercase letters, digits and '-', starting and ending with a letter or "
        "digit (a DNS label).",
    ),
]

Reason = Annotated[str, Field(min_length=1, max_length=2000)]

Version = Annotated[
    int,
    Field(ge=1, description="The version you read; a write with a stale version gets 409."),
]


class PageOut(BaseModel, Generic[T]):
    """One page of a list, and the cursor to pass for the next (null on the last page)."""

    items: list[T]
    next_cursor: str | None


class ActionRequest(BaseModel):
    """Body of a lifecycle action: optional concurrency check, reason and details."""

    version: Version | None = None
    reason: Reason | None = Field(default=None, description="Why; required for `fail`.")
    details: dict[str, Any] | None = Field(
        default=None, description="Free-form details recorded in the fleet event."
    )


def _as_utc(value: dt.datetime) -> dt.datetime:
    """A query time in UTC (naive means UTC); a value that cannot be expressed in UTC is a
    validation error, not a failure deep in the database layer."""
    try:
        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("the time is out of range once converted to UTC") from None


UtcDatetime = Annotated[dt.datetime, AfterValidator(_as_utc)]
"""A datetime filter parameter, normalized to UTC."""
