"""Attaches every noun's sub-command group to the root app (singular names, plural aliases)."""

from __future__ import annotations

import typer

from powernode.cli import nodes


def register(app: typer.Typer) -> None:
    for module, name, alias in ((nodes, "node", "nodes"),):
        app.add_typer(module.app, name=name)
        app.add_typer(module.app, name=alias, hidden=True)
