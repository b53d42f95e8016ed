"""`powernode template ...`"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from powernode.cli import output as cli_output
from powernode.cli.client import ApiClient, CliError
from powernode.cli.common import (
    CliState,
    LimitOption,
    OutputOption,
    VersionOption,
    emit_deleted,
    state,
)
from powernode.cli.output import OutputFormat, emit, emit_table
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
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a template no node uses."""
    state(ctx).client().delete(f"/templates/{template}", version=version)
    emit_deleted("template", template, output)


@app.command()
def preview(ctx: typer.Context, template: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Resolve and compose without writing: layers, conflicts, footprint.

    Exits 6 when modules conflict on a path or on package versions (tables: after printing
    everything; JSON output exits 0 and carries the same facts).
    """
    result = state(ctx).client().get(f"/templates/{template}/preview")
    if output is OutputFormat.JSON:
        emit(result, output)
        return
    print_preview(result)
    problems = conflict_summary(result)
    if problems:
        raise CliError(f"template {template} has {problems}", Category.CONFLICT)


SAMPLE = 5
"""Paths shown per mask or override in the table; JSON has the footprint's whole sample."""


def conflict_summary(result: dict[str, Any]) -> str:
    """'2 path conflicts and 1 package conflict', or '' when there are none."""
    paths = len(result.get("conflicts") or [])
    packages = len(((result.get("footprint") or {}).get("packages") or {}).get("conflicts") or [])
    parts = [
        f"{count} {what} conflict{'s' if count != 1 else ''}"
        for count, what in ((paths, "path"), (packages, "package"))
        if count
    ]
    return " and ".join(parts)


def print_preview(result: dict[str, Any]) -> None:
    """The preview as tables: layers with what each contributes, the totals, packages, masks,
    overrides, and every conflict. Tolerates footprints without the optional fields."""
    foot = result.get("footprint") or {}
    contributions = {m.get("module"): m for m in foot.get("modules") or []}
    layers = []
    for layer in result.get("layers") or []:
        share = contributions.get(f"{layer['name']}@{layer['version']}", {})
        layers.append({**layer, "files": share.get("files"), "bytes": share.get("bytes")})
    emit_table(
        layers,
        ("name", "version", "explicit", "required_by", "files", "bytes"),
        title="layers (files and bytes each module contributes)",
    )
    cli_output.stdout.print(
        f"{foot.get('files', 0)} files, {foot.get('directories', 0)} directories, "
        f"{foot.get('symlinks', 0)} symlinks, {foot.get('bytes', 0)} bytes",
        highlight=False,
    )
    packages = foot.get("packages") or {}
    if packages.get("packages"):
        emit_table(
            [
                {
                    "package": p.get("name"),
                    "constraints": _constraints(p.get("constraints") or []) or "any version",
                    "from": ", ".join(p.get("sources") or []),
                }
                for p in packages["packages"]
            ],
            ("package", "constraints", "from"),
            title="packages",
        )
    for key, count_key, title in (
        ("masks", "removed", "masks (paths hidden from the modules below)"),
        ("overrides", "overridden", "overrides (paths replaced in extended modules)"),
    ):
        reports = foot.get(key) or []
        if reports:
            emit_table(
                [_path_report(report, count_key) for report in reports],
                ("module", count_key, "from", "paths"),
                title=title,
            )
    if result.get("conflicts"):
        emit_table(
            result["conflicts"],
            ("path", "lower", "upper", "difference"),
            title="path conflicts",
        )
    if packages.get("conflicts"):
        emit_table(
            [
                {
                    "package": c.get("package"),
                    "constraints": _constraints(c.get("constraints") or []),
                    "problem": c.get("message"),
                }
                for c in packages["conflicts"]
            ],
            ("package", "constraints", "problem"),
            title="package conflicts",
        )


def _constraints(constraints: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c.get('op')} {c.get('version')} ({c.get('source')})" for c in constraints)


def _path_report(report: dict[str, Any], count_key: str) -> dict[str, Any]:
    """One mask or override: its exact count, the modules the paths came from, a few paths."""
    count = report.get(count_key, 0)
    paths = list(report.get("paths") or [])[:SAMPLE]
    more = count - len(paths)
    by_module = report.get("by_module") or []
    return {
        "module": report.get("module"),
        count_key: count,
        "from": ", ".join(f"{m.get('module')}: {m.get('paths')}" for m in by_module) or None,
        "paths": ", ".join(paths) + (f" (+{more} more)" if more > 0 else ""),
    }


@app.command()
def compose(
    ctx: typer.Context,
    template: str,
    out: Annotated[Path, typer.Option("--out", help="A new or empty directory.")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Materialize the composed tree into OUT (hard links from the content store)."""
    import dataclasses

    from powernode.modules.materialize import materialize

    cli = state(ctx)
    client = cli.client()
    manifest = client.get(f"/templates/{template}/manifest")
    entries = [Entry(**doc) for doc in manifest["entries"]]
    store = fetch_blobs(cli, client, entries)
    done = materialize(entries, store, out)
    if output is OutputFormat.JSON:
        emit({"template": template, "out": str(out), **dataclasses.asdict(done)}, output)
        return
    cli_output.stdout.print(
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
