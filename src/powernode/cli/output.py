"""How the CLI prints: Rich tables for people, JSON for scripts, one line on stderr for errors,
and the one mapping from error categories to exit codes."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from powernode.errors import Category

if TYPE_CHECKING:
    from rich.console import Console

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

_consoles: dict[str, Console] = {}


def _console(name: str) -> Console:
    console = _consoles.get(name)
    if console is None:
        from rich.console import Console

        # Piped output is read by programs or wide pagers: never cut ids to fit 80 columns.
        width = None if name == "stderr" or sys.stdout.isatty() else 10_000
        console = _consoles[name] = Console(stderr=name == "stderr", soft_wrap=True, width=width)
    return console


def __getattr__(name: str) -> Console:
    """`stdout` and `stderr`: Rich consoles, made on first use because importing rich is a
    noticeable part of the CLI's start-up and commands such as `module select` never print
    through them."""
    if name in ("stdout", "stderr"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column.upper().replace("_", " "))
    for row in rows:
        # Text, not str: a cell holds data (a path like "[a]" or "x\\[y"), never Rich markup.
        table.add_row(*(Text(_cell(row.get(c))) for c in columns))
    _console("stdout").print(table)


def emit_object(obj: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in obj.items():
        table.add_row(Text(key), Text(_cell(value)))
    _console("stdout").print(table)


def emit(data: Any, fmt: OutputFormat, *, columns: Sequence[str] | None = None) -> None:
    """Print `data` (an object or a list of objects) in the chosen format."""
    if fmt is OutputFormat.JSON:
        emit_json(data)
    elif isinstance(data, list):
        emit_table(data, columns or (list(data[0]) if data else []))
    else:
        emit_object(data)


def error(message: str) -> None:
    """Print `message` after a red "error:", as it is (never read as Rich markup, so a hint
    such as "write '[' as '\\['" keeps its backslash)."""
    from rich.text import Text

    _console("stderr").print(Text.assemble(("error:", "red"), " ", message), highlight=False)
