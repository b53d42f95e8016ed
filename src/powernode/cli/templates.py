"""`powernode template ...`"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from powernode.cli.client import ApiClient, CliError
from powernode.cli.common import CliState, LimitOption, OutputOption, VersionOption, state
from powernode.cli.output import OutputFormat, emit, stdout
from powernode.cli.params import invalid
from powernode.errors import Category
from powernode.modules.entries import FILE, Entry
from powernode.modules.store import ContentStore

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


@app.command()
def preview(ctx: typer.Context, template: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Resolve and compose without writing: layers, conflicts, footprint."""
    result = state(ctx).client().get(f"/templates/{template}/preview")
    if output is OutputFormat.JSON:
        emit(result, output)
        return
    emit(result["layers"], output, columns=("name", "version", "explicit", "required_by"))
    foot = result["footprint"]
    stdout.print(
        f"{foot['files']} files, {foot['directories']} directories, {foot['symlinks']} symlinks, "
        f"{foot['bytes']} bytes"
    )
    if result["conflicts"]:
        emit(result["conflicts"], output, columns=("path", "lower", "upper", "difference"))
        raise CliError(
            f"template {template} has {len(result['conflicts'])} conflict(s)", Category.CONFLICT
        )


@app.command()
def compose(
    ctx: typer.Context,
    template: str,
    out: Annotated[Path, typer.Option("--out", help="A new or empty directory.")],
) -> None:
    """Materialize the composed tree into OUT (hard links from the content store)."""
    from powernode.modules.materialize import materialize

    cli = state(ctx)
    client = cli.client()
    manifest = client.get(f"/templates/{template}/manifest")
    entries = [Entry(**doc) for doc in manifest["entries"]]
    store = fetch_blobs(cli, client, entries)
    done = materialize(entries, store, out)
    stdout.print(
        f"composed {template} into {out}: {done.files_linked} files linked, "
        f"{done.files_copied} copied, {done.directories} directories, {done.symlinks} symlinks"
        + ("" if done.ownership_applied else " (ownership not applied: not running as root)")
    )


def fetch_blobs(cli: CliState, client: ApiClient, entries: list[Entry]) -> ContentStore:
    """A content store holding every file of `entries`: the server's own when it is on this
    machine, else a local cache filled from `/blobs`."""
    store = ContentStore(_local_content_dir(cli.settings().data_dir))
    for digest in store.missing(e.sha256 for e in entries if e.type == FILE and e.sha256):
        with tempfile.TemporaryFile() as spool:
            client.download(f"/blobs/{digest}", spool)
            spool.seek(0)
            store.put_stream(spool, expected=digest)
    return store


def _local_content_dir(data_dir: Path) -> Path:
    """The server's content store when this machine has it and we may write to it (hard
    links then come for free), else a per-user cache."""
    shared = data_dir / "content"
    if shared.is_dir() and os.access(shared, os.W_OK):
        return shared
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "powernode" / "content"
