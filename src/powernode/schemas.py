"""Field types shared by the API's request and response models."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, Field

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
