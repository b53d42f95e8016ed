"""One exception hierarchy for domain code.

Each subclass carries a category; the API maps categories to HTTP statuses in exactly one place
(`powernode.api.problems`) and the CLI maps them to exit codes in exactly one place
(`powernode.cli.output`). Domain code never raises HTTP exceptions.
"""

from __future__ import annotations

import enum
from typing import Any


class Category(enum.StrEnum):
    """What kind of failure an error is; decides the HTTP status and the exit code."""

    NOT_FOUND = "not-found"
    INVALID = "invalid"
    CONFLICT = "conflict"
    INVALID_TRANSITION = "invalid-transition"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"


class PowernodeError(Exception):
    """Root of every error powernode raises on purpose.

    `detail` is a sentence for a person: what was wrong and, where it helps, how to fix it.
    `extra` holds machine-readable fields that travel with the problem document.
    """

    category: Category = Category.INVALID
    title: str = "Request could not be completed"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(PowernodeError):
    category = Category.NOT_FOUND
    title = "Not found"


class Invalid(PowernodeError):
    category = Category.INVALID
    title = "Invalid input"


class Conflict(PowernodeError):
    category = Category.CONFLICT
    title = "Conflict"


class InvalidTransition(PowernodeError):
    """A lifecycle event not allowed from the entity's current state."""

    category = Category.INVALID_TRANSITION
    title = "Invalid state transition"

    def __init__(self, entity: str, state: str, event: str, allowed_events: list[str]) -> None:
        allowed = ", ".join(allowed_events) if allowed_events else "none"
        super().__init__(
            f"{entity} is {state}; event '{event}' is not allowed from {state} "
            f"(allowed: {allowed})",
            state=state,
            event=event,
            allowed_events=allowed_events,
        )


class Unauthorized(PowernodeError):
    category = Category.UNAUTHORIZED
    title = "Unauthorized"


class Forbidden(PowernodeError):
    category = Category.FORBIDDEN
    title = "Forbidden"


class Unavailable(PowernodeError):
    """A dependency (database, server) cannot be reached."""

    category = Category.UNAVAILABLE
    title = "Service unavailable"
