"""The agent runs on nodes without the server stack installed."""

from __future__ import annotations

import subprocess
import sys

SERVER_STACK = (
    *("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic"),
    *("pydantic", "pydantic_settings", "typer", "rich"),
)


def test_importing_identity_loads_no_server_stack() -> None:
    """A fresh interpreter importing the identity package (and its fakes) loads none of it."""
    code = (
        "import sys\n"
        "import powernode.agent.identity, powernode.agent.identity.testing\n"
        f"stack = {SERVER_STACK!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in stack))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert proc.stdout.strip() == "[]"
