"""ruff and mypy run as ordinary tests, so `make test` fails on a lint or type error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lint

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*argv: str) -> None:
    proc = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}",
            pytrace=False,
        )


def test_ruff_check_passes() -> None:
    """`ruff check` finds nothing."""
    _run("ruff", "check", ".")


def test_ruff_format_is_applied() -> None:
    """Every file is formatted as `ruff format` would."""
    _run("ruff", "format", "--check", ".")


def test_mypy_strict_passes() -> None:
    """`mypy --strict` (configured in pyproject.toml) finds no type errors."""
    _run("mypy")
