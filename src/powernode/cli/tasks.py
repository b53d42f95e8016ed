"""`powernode task ...`"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from powernode.cli.common import (
    LimitOption,
    OutputOption,
    ReasonOption,
    StateOption,
    VersionOption,
    emit_deleted,
    state,
)
from powernode.cli.output import OutputFormat, emit
from powernode.cli.params import invalid, json_document, lookup_id, parse_json_object

app = typer.Typer(help="Tasks: work queued for a node or an instance.", no_args_is_help=True)

COLUMNS = ("kind", "state", "attempts", "max_attempts", "node_id", "instance_id", "id")


@app.command("list")
def list_(
    ctx: typer.Context,
    node: Annotated[str | None, typer.Option(help="Node name or id.")] = None,
    instance: Annotated[str | None, typer.Option(help="Instance id.")] = None,
    state_: StateOption = None,
    kind: Annotated[str | None, typer.Option(help="Only of this kind.")] = None,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List tasks."""
    client = state(ctx).client()
    items = client.paginate(
        "/tasks",
        limit=limit,
        node_id=lookup_id(client, "/nodes", node),
        instance_id=instance,
        state=state_,
        kind=kind,
    )
    emit(items, output, columns=COLUMNS)


@app.command()
def show(ctx: typer.Context, task: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show one task (by id)."""
    emit(state(ctx).client().get(f"/tasks/{task}"), output)


@app.command()
def create(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="shell, apply_modules, reboot or noop.")],
    node: Annotated[str | None, typer.Option(help="Target node name or id.")] = None,
    instance: Annotated[str | None, typer.Option(help="Target instance id.")] = None,
    payload: Annotated[str | None, typer.Option(help="The payload as a JSON object.")] = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="shell: one argv item; repeat in order.")
    ] = None,
    max_attempts: Annotated[int, typer.Option(help="Attempts before it fails for good.")] = 3,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Queue a task for a node (--node) or an instance (--instance)."""
    if (node is None) == (instance is None):
        raise invalid("give exactly one target: --node or --instance")
    document: dict[str, Any] = json_document(payload, None, None, option="--payload")
    if arg:
        if kind != "shell":
            raise invalid(f"--arg is for shell tasks; give a {kind} payload with --payload")
        document["argv"] = arg
    body = {
        "kind": kind,
        "node": node,
        "instance_id": instance,
        "payload": document,
        "max_attempts": max_attempts,
    }
    emit(state(ctx).client().post("/tasks", body), output)


@app.command()
def update(
    ctx: typer.Context,
    task: str,
    max_attempts: Annotated[
        int, typer.Option(help="New retry budget (at least the attempts made so far).")
    ],
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a live task's retry budget."""
    changes = {"max_attempts": max_attempts}
    emit(state(ctx).client().patch_at(f"/tasks/{task}", version, changes), output)


@app.command()
def delete(
    ctx: typer.Context,
    task: str,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a finished task (its events stay in the log)."""
    state(ctx).client().delete(f"/tasks/{task}", version=version)
    emit_deleted("task", task, output)


@app.command()
def action(
    ctx: typer.Context,
    task: str,
    event: Annotated[str, typer.Argument(help="cancel or retry (agent outcomes need admin).")],
    reason: ReasonOption = None,
    result: Annotated[
        str | None, typer.Option(help="Outcome as a JSON object (succeed, fail).")
    ] = None,
    lease_seconds: Annotated[int | None, typer.Option(help="Lease length (lease).")] = None,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Fire a lifecycle event on a task."""
    body = {
        "reason": reason,
        "version": version,
        "result": parse_json_object(result, "--result"),
        "lease_seconds": lease_seconds,
    }
    emit(state(ctx).client().post(f"/tasks/{task}/actions/{event}", body), output)
