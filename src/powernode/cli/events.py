"""`powernode events list`: the audited fleet event log, oldest first."""

from __future__ import annotations

from typing import Annotated

import typer

from powernode.cli.common import LimitOption, OutputOption, state
from powernode.cli.output import OutputFormat, emit

app = typer.Typer(help="Fleet events: what happened, to what, by whom.", no_args_is_help=True)

COLUMNS = ("occurred_at", "severity", "kind", "subject_type", "subject_id", "actor")


@app.command("list")
def list_(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Event kind; 'node.*' matches a prefix.")] = None,
    severity: Annotated[str | None, typer.Option(help="routine or critical.")] = None,
    subject_type: Annotated[
        str | None, typer.Option(help="node, instance, task, template, ...")
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Subject id.")] = None,
    correlation_id: Annotated[str | None, typer.Option(help="Only this request's events.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time; at or after.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time; before.")] = None,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List fleet events, oldest first."""
    items = (
        state(ctx)
        .client()
        .paginate(
            "/events",
            limit=limit,
            kind=kind,
            severity=severity,
            subject_type=subject_type,
            subject_id=subject,
            correlation_id=correlation_id,
            since=since,
            until=until,
        )
    )
    emit(items, output, columns=COLUMNS)
