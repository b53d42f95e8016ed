"""`powernode instance ...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.common import (
    DetailOption,
    LimitOption,
    OutputOption,
    ReasonOption,
    StateOption,
    VersionOption,
    emit_deleted,
    state,
)
from powernode.cli.output import OutputFormat, emit
from powernode.cli.params import json_document, lookup_id, parse_pairs

app = typer.Typer(
    help="Instances: workloads (vm, container, docker, k3s) on nodes.", no_args_is_help=True
)

COLUMNS = ("name", "kind", "state", "desired_state", "node_id", "id")


@app.command("list")
def list_(
    ctx: typer.Context,
    node: Annotated[str | None, typer.Option(help="Node name or id.")] = None,
    state_: StateOption = None,
    kind: Annotated[str | None, typer.Option(help="Only of this kind.")] = None,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List instances."""
    client = state(ctx).client()
    items = client.paginate(
        "/instances",
        limit=limit,
        node_id=lookup_id(client, "/nodes", node),
        state=state_,
        kind=kind,
    )
    emit(items, output, columns=COLUMNS)


@app.command()
def show(ctx: typer.Context, instance: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show one instance (by id)."""
    emit(state(ctx).client().get(f"/instances/{instance}"), output)


@app.command()
def create(
    ctx: typer.Context,
    node: Annotated[str, typer.Argument(help="Node name or id.")],
    name: str,
    kind: Annotated[str, typer.Option(help="vm, container, docker or k3s.")],
    spec: Annotated[str | None, typer.Option(help="The spec as a JSON object.")] = None,
    spec_file: Annotated[
        Path | None, typer.Option(help="Read the spec from this JSON file ('-' for stdin).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE spec field (VALUE as JSON if it parses); repeat."),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create an instance on a node (it starts pending)."""
    body = {
        "node": node,
        "name": name,
        "kind": kind,
        "spec": json_document(spec, spec_file, set_, option="--spec"),
    }
    emit(state(ctx).client().post("/instances", body), output)


@app.command()
def delete(
    ctx: typer.Context,
    instance: str,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a pending or terminated instance."""
    state(ctx).client().delete(f"/instances/{instance}", version=version)
    emit_deleted("instance", instance, output)


@app.command()
def action(
    ctx: typer.Context,
    instance: str,
    event: Annotated[str, typer.Argument(help="provision, drain, stop, start, fail, retry, ...")],
    reason: ReasonOption = None,
    version: VersionOption = None,
    detail: DetailOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Fire a lifecycle event on an instance."""
    body = {"reason": reason, "version": version, "details": parse_pairs(detail) or None}
    emit(state(ctx).client().post(f"/instances/{instance}/actions/{event}", body), output)
