"""Attaches every noun's sub-command group to the root app (singular names, plural aliases)."""

from __future__ import annotations

import typer

from powernode.cli import (
    artifacts,
    compliance,
    events,
    images,
    instances,
    modules,
    nodes,
    providers,
    tasks,
    templates,
    tokens,
)

NOUNS: tuple[tuple[typer.Typer, str, tuple[str, ...]], ...] = (
    (nodes.app, "node", ("nodes",)),
    (instances.app, "instance", ("instances",)),
    (tasks.app, "task", ("tasks",)),
    (templates.app, "template", ("templates",)),
    (modules.app, "module", ("modules",)),
    (providers.app, "provider", ("providers", "provider-account")),
    (tokens.app, "token", ("tokens",)),
    (events.app, "events", ("event",)),
    (compliance.app, "compliance", ()),
    (artifacts.app, "artifact", ("artifacts",)),
    (images.app, "image", ("images",)),
)


def register(app: typer.Typer) -> None:
    for noun_app, name, aliases in NOUNS:
        app.add_typer(noun_app, name=name)
        for alias in aliases:
            app.add_typer(noun_app, name=alias, hidden=True)
