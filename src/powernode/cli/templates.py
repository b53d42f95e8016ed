"""`powernode template ...`"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from powernode.cli.common import LimitOption, OutputOption, VersionOption, state
from powernode.cli.output import OutputFormat, emit
from powernode.cli.params import invalid

app = typer.Typer(help="Templates: named, ordered stacks of modules.", no_args_is_help=True)

COLUMNS = ("name", "description", "modules", "version", "id")

ModuleOption = Annotated[
    list[str] | None,
    typer.Option("--module", help="NAME@VERSION, lowest layer first; repeat for more."),
]


def parse_modules(items: list[str] | None) -> list[dict[str, str]] | None:
    """NAME@VERSION arguments as module refs (None stays None)."""
    if items is None:
        return None
    refs = []
    for item in items:
        name, sep, version = item.rpartition("@")
        if not sep or not name or not version:
            raise invalid(f"--module {item!r} is not NAME@VERSION")
        refs.append({"name": name, "version": version})
    return refs


def _flat(template: dict[str, Any]) -> dict[str, Any]:
    return {**template, "modules": [f"{m['name']}@{m['version']}" for m in template["modules"]]}


def _emit(data: Any, output: OutputFormat) -> None:
    """Like `emit`, but tables show modules as NAME@VERSION."""
    if output is OutputFormat.JSON:
        emit(data, output)
    elif isinstance(data, list):
        emit([_flat(t) for t in data], output, columns=COLUMNS)
    else:
        emit(_flat(data), output)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List templates."""
    _emit(state(ctx).client().paginate("/templates", limit=limit), output)


@app.command()
def show(ctx: typer.Context, template: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show one template (by name or id)."""
    _emit(state(ctx).client().get(f"/templates/{template}"), output)


@app.command()
def create(
    ctx: typer.Context,
    name: str,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    module: ModuleOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a template."""
    body = {"name": name, "description": description, "modules": parse_modules(module) or []}
    _emit(state(ctx).client().post("/templates", body), output)


@app.command()
def update(
    ctx: typer.Context,
    template: str,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    module: ModuleOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a template's description or replace its module stack."""
    if description is None and module is None:
        raise invalid("nothing to change; give --description or --module")
    client = state(ctx).client()
    current = client.get(f"/templates/{template}")
    body = {
        "version": current["version"],
        "description": description,
        "modules": parse_modules(module),
    }
    body = {k: v for k, v in body.items() if v is not None}
    _emit(client.patch(f"/templates/{template}", body), output)


@app.command()
def delete(
    ctx: typer.Context,
    template: str,
    version: VersionOption = None,
) -> None:
    """Delete a template no node uses."""
    state(ctx).client().delete(f"/templates/{template}", version=version)
    typer.echo(f"deleted template {template}")
