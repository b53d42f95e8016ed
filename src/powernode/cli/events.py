"""`powernode events list|tail|chain`: the audited fleet event log."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

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


def _line(event: dict[str, Any]) -> str:
    subject = (
        f"{event['subject_type']}/{event['subject_id']}"
        if event["subject_id"]
        else (event["subject_type"])
    )
    return (
        f"{event['occurred_at']}  {event['severity']:<8}  {event['kind']:<28}  {subject}  "
        f"{event['actor']}"
    )


def _print(events: list[dict[str, Any]], output: OutputFormat) -> None:
    for event in events:
        # One JSON object per line (NDJSON) when following, so scripts can read as it flows.
        typer.echo(
            json.dumps(event, sort_keys=True) if output is OutputFormat.JSON else _line(event)
        )


@app.command()
def tail(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, max=1000, help="How many.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events as they come.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, max=60, help="Seconds between polls with --follow.")
    ] = 1.0,
    kind: Annotated[str | None, typer.Option(help="Event kind; 'node.*' matches a prefix.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Print the newest events (oldest of them first), and with -f keep following the log."""
    client = state(ctx).client()
    newest = client.get("/events", order="desc", limit=lines, kind=kind)["items"]
    events = list(reversed(newest))
    _print(events, output)
    last = events[-1]["id"] if events else None
    while follow:
        time.sleep(interval)
        fresh = client.paginate("/events", after=last, kind=kind)
        _print(fresh, output)
        if fresh:  # with an empty log `last` stays None: everything that arrives is new
            last = fresh[-1]["id"]


@app.command()
def chain(
    ctx: typer.Context,
    correlation_id: Annotated[str, typer.Argument(help="The correlation id of a request.")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Every event one request caused, each after its cause."""
    emit(state(ctx).client().get(f"/events/chains/{correlation_id}"), output, columns=COLUMNS)
