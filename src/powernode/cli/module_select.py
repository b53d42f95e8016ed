"""`powernode module select`: try filter rules on a local tree, printing what rsync would.

Kept apart from `cli/modules.py` and free of the HTTP client, the settings and rich: `main.run`
dispatches this command straight here, and calls `run_select` itself when the arguments have
the usual form, because importing those (and Typer's parsing, which loads pydantic) takes
longer than selecting a large tree does; the command is measured against rsync's dry run in
benchmarks/bench_select.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from powernode.modules.filters import select_output
from powernode.modules.rsync_names import rsync_charset


def select(
    directory: Annotated[Path, typer.Argument(help="A tree to select from.")],
    rules: Annotated[Path, typer.Option("--rules", help="A file of rsync filter rules.")],
) -> None:
    """Print the paths RULES selects from DIR, as rsync would transfer them (no server needed).

    Sorted, one a line, directories ending in '/', names escaped as rsync escapes them (\\#012).
    """
    run_select(directory, rules)


def run_select(directory: Path, rules: Path) -> None:
    """The command's work, for `main.run` to call without Typer parsing the arguments."""
    text = rules.read_bytes()  # as rsync does: any encoding works (an OSError says what failed)
    output = select_output(directory, text, rsync_charset(), source=str(rules))
    sys.stdout.buffer.write(output)
    sys.stdout.buffer.flush()


def simple_arguments(argv: list[str]) -> tuple[Path, Path] | None:
    """DIR and FILE from `DIR --rules FILE` (in either order, or `--rules=FILE`); None for
    anything else (help, a missing or extra argument), which Typer then parses and reports."""
    positional: list[str] = []
    rules: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--rules" and rules is None and i + 1 < len(argv):
            rules, i = argv[i + 1], i + 2
        elif arg.startswith("--rules=") and rules is None:
            rules, i = arg.removeprefix("--rules="), i + 1
        elif arg.startswith("-") or positional:
            return None
        else:
            positional, i = [arg], i + 1
    if rules is None or not positional:
        return None
    return Path(positional[0]), Path(rules)
