"""Parsing CLI arguments into API request fields."""

from __future__ import annotations

from powernode.cli.client import ApiClient, CliError
from powernode.db.crud import parse_ref


def parse_pairs(items: list[str] | None) -> dict[str, str]:
    """KEY=VALUE arguments as a dict; a malformed one is a CliError naming it."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{item!r} is not KEY=VALUE")
        result[key] = value
    return result


parse_labels = parse_pairs


def lookup_id(client: ApiClient, collection: str, ref: str | None) -> str | None:
    """The id of the object named or identified by `ref` in `collection` (None stays None)."""
    if ref is None:
        return None
    if parse_ref(ref) is not None:
        return ref
    return str(client.get(f"{collection}/{ref}")["id"])
