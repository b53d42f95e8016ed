"""`powernode module ...`: import, list, show, and try filter rules locally."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.client import CliError
from powernode.cli.common import LimitOption, OutputOption, state
from powernode.cli.module_select import select
from powernode.cli.output import OutputFormat, emit, stdout
from powernode.errors import Invalid

app = typer.Typer(help="Modules: versioned file trees that templates stack.", no_args_is_help=True)

COLUMNS = ("name", "versions", "created_at")
MODULE_TOML = "module.toml"


def split_ref(ref: str) -> tuple[str, str]:
    """NAME@VERSION, or a CliError saying how to write it."""
    name, sep, version = ref.partition("@")
    if not sep or not name or not version:
        raise CliError(f"{ref!r} is not NAME@VERSION (e.g. base@1.0)")
    return name, version


def pack(root: Path, archive: Path) -> None:
    """Tar `root` with module.toml first, paths relative, numeric owners, sorted for stability."""
    with tarfile.open(archive, "w") as tar:
        toml = root / MODULE_TOML
        if toml.is_file():
            tar.add(toml, arcname=MODULE_TOML)
        for current, dirs, files in os.walk(root):
            dirs.sort()
            rel_dir = Path(current).relative_to(root)
            for name in sorted(dirs + files):
                rel = rel_dir / name
                if rel.as_posix() == MODULE_TOML:
                    continue
                tar.add(Path(current) / name, arcname=rel.as_posix(), recursive=False)


@app.command("import")
def import_(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="The module tree (module.toml on top).")],
    name: Annotated[
        str | None, typer.Option(help="Module name [default: from module.toml].")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Version \\[default: from module.toml].")
    ] = None,
    preserve_owner: Annotated[
        bool, typer.Option(help="Keep files' uid/gid instead of root:root.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Import DIR as a new, immutable module version."""
    from powernode.modules.spec import load_module_toml

    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory")
    toml = directory / MODULE_TOML
    if toml.is_file():
        toml_name, toml_version, _ = load_module_toml(toml)
        name, version = name or toml_name, version or toml_version
    if not name or not version:
        raise CliError("give --name and --version, or set name and version in module.toml")
    with tempfile.TemporaryDirectory(prefix="powernode-import-") as tmp:
        archive = Path(tmp) / "tree.tar"
        pack(directory, archive)
        with archive.open("rb") as body:
            created = (
                state(ctx)
                .client()
                .upload(
                    f"/modules/{name}/versions",
                    body,
                    content_type="application/x-tar",
                    version=version,
                    preserve_owner=preserve_owner,
                )
            )
    emit(created, output)


@app.command("list")
def list_(
    ctx: typer.Context, limit: LimitOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """List modules and their versions."""
    emit(state(ctx).client().paginate("/modules", limit=limit), output, columns=COLUMNS)


@app.command()
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
    files: Annotated[bool, typer.Option(help="List every path the version contributes.")] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a module version (and with --files its entries)."""
    name, version = split_ref(ref)
    client = state(ctx).client()
    if files:
        entries = client.get(f"/modules/{name}/versions/{version}/entries")
        emit(entries, output, columns=("path", "type", "mode", "uid", "gid", "size", "sha256"))
        return
    emit(client.get(f"/modules/{name}/versions/{version}"), output)


# Defined apart so that `main.run` can run it without importing this module's dependencies.
app.command()(select)


@app.command()
def trust(
    ctx: typer.Context,
    name: str,
    key: Annotated[
        list[Path] | None, typer.Option(help="Trust signatures by this public key (PEM).")
    ] = None,
    identity: Annotated[
        list[str] | None,
        typer.Option(help="Signer identity regexp (whole match); pairs with --issuer in order."),
    ] = None,
    issuer: Annotated[
        list[str] | None, typer.Option(help="Issuer regexp (whole match) for the --identity.")
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the policy and exit.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the policy.")] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Set who may sign module NAME: pinned keys and/or identity+issuer rules (admin). A version
    with no signature satisfying the policy cannot be assigned to nodes."""
    client = state(ctx).client()
    path = f"/modules/{name}/trust-policy"
    if show:
        emit(client.get(path), output)
        return
    if delete:
        client.delete(path)
        stdout.print(f"trust policy of {name} removed")
        return
    identities, issuers = identity or [], issuer or []
    if len(identities) != len(issuers):
        raise Invalid("give one --issuer for each --identity, in the same order")
    if not identities and not key:
        raise Invalid("a trust policy needs --key and/or --identity with --issuer")
    policy = {
        "identities": [
            {"identity": i, "issuer": s} for i, s in zip(identities, issuers, strict=True)
        ],
        "public_keys": [p.read_text() for p in key or []],
    }
    emit(client.put(path, policy), output)
