"""`powernode provider ...`: provider accounts and their catalogs (regions, zones, types)."""

from __future__ import annotations

from typing import Annotated

import typer

from powernode.cli.common import LimitOption, OutputOption, VersionOption, emit_deleted, state
from powernode.cli.output import OutputFormat, emit
from powernode.cli.params import invalid, parse_typed_pairs
from powernode.fleet.states import Arch

app = typer.Typer(help="Provider accounts: where nodes are created.", no_args_is_help=True)
region_app = typer.Typer(help="Regions of a provider account.", no_args_is_help=True)
zone_app = typer.Typer(help="Zones of a region.", no_args_is_help=True)
type_app = typer.Typer(help="Instance types of a provider account.", no_args_is_help=True)
app.add_typer(region_app, name="region")
app.add_typer(zone_app, name="zone")
app.add_typer(type_app, name="instance-type")

COLUMNS = ("name", "kind", "credentials_ref", "settings", "version", "id")


@app.command("list")
def list_(
    ctx: typer.Context,
    kind: Annotated[str | None, typer.Option(help="Only of this kind.")] = None,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List provider accounts."""
    items = state(ctx).client().paginate("/provider-accounts", limit=limit, kind=kind)
    emit(items, output, columns=COLUMNS)


@app.command()
def show(ctx: typer.Context, account: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show one provider account (by name or id)."""
    emit(state(ctx).client().get(f"/provider-accounts/{account}"), output)


@app.command()
def create(
    ctx: typer.Context,
    name: str,
    kind: Annotated[
        str, typer.Option(help="local, qemu, aws, gcp, azure, openstack or digitalocean.")
    ],
    setting: Annotated[
        list[str] | None,
        typer.Option("--setting", help="KEY=VALUE (VALUE as JSON if it parses); repeat."),
    ] = None,
    credentials_ref: Annotated[
        str | None, typer.Option(help="Where the secrets live: env:NAME, file:PATH, vault:PATH.")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register a provider account (secrets stay outside; point at them)."""
    body = {
        "name": name,
        "kind": kind,
        "settings": parse_typed_pairs(setting),
        "credentials_ref": credentials_ref,
    }
    emit(state(ctx).client().post("/provider-accounts", body), output)


@app.command()
def update(
    ctx: typer.Context,
    account: str,
    setting: Annotated[
        list[str] | None,
        typer.Option("--setting", help="KEY=VALUE to set (VALUE as JSON if it parses); repeat."),
    ] = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="A setting KEY to remove; repeat.")
    ] = None,
    credentials_ref: Annotated[
        str | None, typer.Option(help="Where the secrets live: env:NAME, file:PATH, vault:PATH.")
    ] = None,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change an account's settings (merged key by key) or its credentials reference."""
    if not setting and not unset and credentials_ref is None:
        raise invalid("nothing to change; give --setting, --unset or --credentials-ref")
    client = state(ctx).client()
    path = f"/provider-accounts/{account}"
    current = client.get(path)
    changes: dict[str, object] = {"credentials_ref": credentials_ref}
    if setting or unset:
        merged = {**current["settings"], **parse_typed_pairs(setting)}
        for key in unset or []:
            merged.pop(key, None)
        changes["settings"] = merged
    expected = version if version is not None else current["version"]
    emit(client.patch_at(path, expected, changes), output)


@app.command()
def delete(
    ctx: typer.Context,
    account: str,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a provider account no node uses."""
    state(ctx).client().delete(f"/provider-accounts/{account}", version=version)
    emit_deleted("provider account", account, output)


@region_app.command("add")
def region_add(
    ctx: typer.Context,
    account: str,
    name: str,
    display_name: Annotated[str | None, typer.Option(help="Human-readable name.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a region to an account's catalog."""
    body = {"name": name, "display_name": display_name}
    emit(state(ctx).client().post(f"/provider-accounts/{account}/regions", body), output)


@region_app.command("list")
def region_list(
    ctx: typer.Context,
    account: str,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List an account's regions."""
    items = state(ctx).client().paginate(f"/provider-accounts/{account}/regions", limit=limit)
    emit(items, output, columns=("name", "display_name", "id"))


@zone_app.command("add")
def zone_add(
    ctx: typer.Context,
    account: str,
    region: str,
    name: str,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a zone to a region."""
    path = f"/provider-accounts/{account}/regions/{region}/zones"
    emit(state(ctx).client().post(path, {"name": name}), output)


@zone_app.command("list")
def zone_list(
    ctx: typer.Context,
    account: str,
    region: str,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List a region's zones."""
    path = f"/provider-accounts/{account}/regions/{region}/zones"
    emit(state(ctx).client().paginate(path, limit=limit), output, columns=("name", "id"))


@type_app.command("add")
def type_add(
    ctx: typer.Context,
    account: str,
    name: str,
    vcpus: Annotated[int, typer.Option(help="Virtual CPUs.")],
    memory_mib: Annotated[int, typer.Option(help="Memory in MiB.")],
    arch: Annotated[Arch, typer.Option(help="CPU architecture.")] = Arch.AMD64,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add an instance type to an account's catalog."""
    body = {"name": name, "vcpus": vcpus, "memory_mib": memory_mib, "arch": arch}
    emit(state(ctx).client().post(f"/provider-accounts/{account}/instance-types", body), output)


@type_app.command("list")
def type_list(
    ctx: typer.Context,
    account: str,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List an account's instance types."""
    items = (
        state(ctx).client().paginate(f"/provider-accounts/{account}/instance-types", limit=limit)
    )
    emit(items, output, columns=("name", "vcpus", "memory_mib", "arch", "id"))


@region_app.command("remove")
def region_remove(ctx: typer.Context, account: str, name: str) -> None:
    """Remove a region and its zones (refused while nodes are placed in it)."""
    state(ctx).client().delete(f"/provider-accounts/{account}/regions/{name}")
    typer.echo(f"removed region {name} from {account}")


@zone_app.command("remove")
def zone_remove(ctx: typer.Context, account: str, region: str, name: str) -> None:
    """Remove a zone (refused while nodes are placed in it)."""
    state(ctx).client().delete(f"/provider-accounts/{account}/regions/{region}/zones/{name}")
    typer.echo(f"removed zone {region}/{name} from {account}")


@type_app.command("remove")
def type_remove(ctx: typer.Context, account: str, name: str) -> None:
    """Remove an instance type from the catalog."""
    state(ctx).client().delete(f"/provider-accounts/{account}/instance-types/{name}")
    typer.echo(f"removed instance type {name} from {account}")


@region_app.command("show")
def region_show(
    ctx: typer.Context, account: str, name: str, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Show one region."""
    emit(state(ctx).client().get(f"/provider-accounts/{account}/regions/{name}"), output)


@region_app.command("update")
def region_update(
    ctx: typer.Context,
    account: str,
    name: str,
    display_name: Annotated[str, typer.Option(help="New human-readable name.")],
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Change a region's display name."""
    path = f"/provider-accounts/{account}/regions/{name}"
    emit(state(ctx).client().patch_at(path, version, {"display_name": display_name}), output)


@zone_app.command("show")
def zone_show(
    ctx: typer.Context,
    account: str,
    region: str,
    name: str,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one zone."""
    path = f"/provider-accounts/{account}/regions/{region}/zones/{name}"
    emit(state(ctx).client().get(path), output)


@type_app.command("show")
def type_show(
    ctx: typer.Context, account: str, name: str, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Show one instance type."""
    emit(state(ctx).client().get(f"/provider-accounts/{account}/instance-types/{name}"), output)


@type_app.command("update")
def type_update(
    ctx: typer.Context,
    account: str,
    name: str,
    vcpus: Annotated[int | None, typer.Option(help="Virtual CPUs.")] = None,
    memory_mib: Annotated[int | None, typer.Option(help="Memory in MiB.")] = None,
    arch: Annotated[Arch | None, typer.Option(help="CPU architecture.")] = None,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Resize an instance type or change its arch."""
    if vcpus is None and memory_mib is None and arch is None:
        raise invalid("nothing to change; give --vcpus, --memory-mib or --arch")
    path = f"/provider-accounts/{account}/instance-types/{name}"
    changes = {"vcpus": vcpus, "memory_mib": memory_mib, "arch": arch}
    emit(state(ctx).client().patch_at(path, version, changes), output)
