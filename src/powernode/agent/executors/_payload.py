"""Small validators for task payloads (the agent carries no pydantic): each raises PayloadError
naming the field."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from powernode.agent.errors import PayloadError


def only(payload: dict[str, Any], allowed: Collection[str]) -> None:
    """Refuse fields the kind does not know (a typo must not be ignored silently)."""
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise PayloadError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def text(payload: dict[str, Any], key: str, default: str | None = None) -> str:
    """A required (or defaulted) string field."""
    value = payload.get(key, default)
    if not isinstance(value, str):
        raise PayloadError(f"{key} must be a string")
    return value


def optional_text(payload: dict[str, Any], key: str) -> str | None:
    """A string field that may be missing or null."""
    value = payload.get(key)
    if value is not None and not isinstance(value, str):
        raise PayloadError(f"{key} must be a string or null")
    return value


def integer(payload: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """An integer field within [low, high]."""
    value = payload.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise PayloadError(f"{key} must be an integer from {low} to {high}")
    return value


def flag(payload: dict[str, Any], key: str, default: bool) -> bool:
    """A boolean field."""
    value = payload.get(key, default)
    if not isinstance(value, bool):
        raise PayloadError(f"{key} must be true or false")
    return value


def text_list(payload: dict[str, Any], key: str) -> list[str]:
    """A non-empty list of strings."""
    value = payload.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PayloadError(f"{key} must be a non-empty list of strings")
    return list(value)


def text_map(payload: dict[str, Any], key: str) -> dict[str, str]:
    """An object of string values (empty if missing)."""
    value = payload.get(key) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise PayloadError(f"{key} must be an object of strings")
    return dict(value)
