"""How the CLI prints: Rich tables for people, JSON for scripts, one line on stderr for errors,
and the one mapping from error categories to exit codes."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from powernode.errors import Category

EXIT_CODES: dict[Category | None, int] = {
    None: 1,
    Category.INVALID: 2,
    Category.UNAUTHORIZED: 3,
    Category.FORBIDDEN: 4,
    Category.NOT_FOUND: 5,
    Category.CONFLICT: 6,
    Category.INVALID_TRANSITION: 6,
    Category.UNAVAILABLE: 7,
}

# Piped output is read by programs or wide pagers: never cut ids to fit 80 columns there.
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)
stderr = Console(stderr=True, soft_wrap=True)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={_scalar(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ",".join(_scalar(v) for v in value) or "-"
    return str(value)


def _scalar(value: Any) -> str:
    """A nested value as compact JSON (not a Python repr); strings as they are."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def emit_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str | None = None
) -> None:
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "))
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    stdout.print(table)


def emit_object(obj: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in obj.items():
        table.add_row(key, _cell(value))
    stdout.print(table)


def emit(data: Any, fmt: OutputFormat, *, columns: Sequence[str] | None = None) -> None:
    """Print `data` (an object or a list of objects) in the chosen format."""
    if fmt is OutputFormat.JSON:
        emit_json(data)
    elif isinstance(data, list):
        emit_table(data, columns or (list(data[0]) if data else []))
    else:
        emit_object(data)


def error(message: str) -> None:
    stderr.print(f"[red]error:[/red] {message}", highlight=False)
