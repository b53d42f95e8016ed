"""Parsing CLI arguments into API request fields."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from powernode.cli.client import ApiClient, CliError
from powernode.errors import Category


def invalid(message: str) -> CliError:
    """A CliError for bad input on the command line (exits like an API 'invalid')."""
    return CliError(message, Category.INVALID)


def parse_pairs(items: list[str] | None) -> dict[str, str]:
    """KEY=VALUE arguments as a dict; a malformed one is a CliError naming it."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise invalid(f"{item!r} is not KEY=VALUE")
        result[key] = value
    return result


parse_labels = parse_pairs


def parse_typed_pairs(items: list[str] | None) -> dict[str, Any]:
    """KEY=VALUE arguments whose VALUE is read as JSON when it is valid JSON, else as a string."""
    result: dict[str, Any] = {}
    for key, value in parse_pairs(items).items():
        try:
            result[key] = json.loads(value)
        except ValueError:
            result[key] = value
    return result


def parse_json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """`text` parsed as a JSON object (None stays None); anything else is a CliError."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise invalid(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise invalid(f'{option} must be a JSON object, like \'{{"key": "value"}}\'')
    return value


def read_json_file(path: Path | None, option: str) -> dict[str, Any] | None:
    """The JSON object in the file at `path` ('-' reads stdin); None stays None."""
    if path is None:
        return None
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise invalid(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc
    return parse_json_object(text, f"{option} {path}")


def json_document(
    text: str | None, path: Path | None, sets: list[str] | None, *, option: str
) -> dict[str, Any]:
    """A JSON object from `--OPTION JSON` or `--OPTION-file FILE`, then `--set KEY=VALUE` on top."""
    if text is not None and path is not None:
        raise invalid(f"give {option} or {option}-file, not both")
    document = parse_json_object(text, option) or read_json_file(path, f"{option}-file") or {}
    return {**document, **parse_typed_pairs(sets)}


def lookup_id(client: ApiClient, collection: str, ref: str | None) -> str | None:
    """The id of the object named or identified by `ref` in `collection` (None stays None)."""
    if ref is None:
        return None
    try:
        return str(uuid.UUID(ref))
    except ValueError:  # a name: ask the server
        return str(client.get(f"{collection}/{ref}")["id"])
