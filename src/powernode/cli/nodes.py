"""`powernode node ...`"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from powernode.cli.client import ApiClient, CliError
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
from powernode.cli.output import OutputFormat, emit, stderr
from powernode.cli.params import invalid, lookup_id, parse_labels, parse_pairs
from powernode.errors import Category

app = typer.Typer(help="Nodes: machines in the fleet.", no_args_is_help=True)

COLUMNS = ("name", "state", "desired_state", "arch", "labels", "id")


@app.command("list")
def list_(
    ctx: typer.Context,
    state_: StateOption = None,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Label selector, e.g. env=prod,gpu.")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Template name or id.")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider account name or id.")] = None,
    created_after: Annotated[
        str | None, typer.Option(help="Only nodes created at or after (ISO 8601).")
    ] = None,
    created_before: Annotated[
        str | None, typer.Option(help="Only nodes created before (ISO 8601).")
    ] = None,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List nodes."""
    client = state(ctx).client()
    items = client.paginate(
        "/nodes",
        limit=limit,
        state=state_,
        selector=selector,
        template_id=lookup_id(client, "/templates", template),
        provider_account_id=lookup_id(client, "/provider-accounts", provider),
        created_after=created_after,
        created_before=created_before,
    )
    emit(items, output, columns=COLUMNS)


@app.command()
def show(ctx: typer.Context, node: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show one node (by name or id)."""
    emit(state(ctx).client().get(f"/nodes/{node}"), output)


@app.command()
def create(
    ctx: typer.Context,
    name: str,
    arch: Annotated[str, typer.Option(help="amd64 or arm64.")] = "amd64",
    template: Annotated[str | None, typer.Option(help="Template name or id.")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider account name or id.")] = None,
    region: Annotated[
        str | None, typer.Option(help="Region name or id in the provider's catalog.")
    ] = None,
    zone: Annotated[
        str | None, typer.Option(help="Zone name or id in that region (needs --region).")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE; repeat for more.")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Declare a node (it starts pending)."""
    client = state(ctx).client()
    body: dict[str, Any] = {"name": name, "arch": arch, "labels": parse_labels(label)}
    body["template_id"] = lookup_id(client, "/templates", template)
    body["provider_account_id"] = lookup_id(client, "/provider-accounts", provider)
    body["region_id"], body["zone_id"] = catalog_ids(client, provider, region, zone)
    emit(client.post("/nodes", body), output)


def catalog_ids(
    client: ApiClient, provider: str | None, region: str | None, zone: str | None
) -> tuple[str | None, str | None]:
    """The ids of `region` and `zone` (names or ids) in `provider`'s catalog."""
    if region is None and zone is None:
        return None, None
    if provider is None or region is None:
        raise invalid("--region needs --provider, and --zone needs --region")
    base = f"/provider-accounts/{provider}/regions"
    found = _catalog_row(client.paginate(base), region, f"region {region!r} of {provider}")
    if zone is None:
        return str(found["id"]), None
    zones = client.paginate(f"{base}/{found['name']}/zones")
    in_zone = _catalog_row(zones, zone, f"zone {zone!r} in region {region!r}")
    return str(found["id"]), str(in_zone["id"])


def _catalog_row(rows: list[Any], ref: str, what: str) -> Any:
    for row in rows:
        if ref in (row["name"], row["id"]):
            return row
    known = ", ".join(sorted(row["name"] for row in rows)) or "none"
    raise CliError(f"{what} does not exist (known: {known})", Category.NOT_FOUND)


@app.command()
def delete(
    ctx: typer.Context,
    node: str,
    version: VersionOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete a pending or terminated node."""
    state(ctx).client().delete(f"/nodes/{node}", version=version)
    emit_deleted("node", node, output)


@app.command()
def action(
    ctx: typer.Context,
    node: str,
    event: Annotated[str, typer.Argument(help="provision, drain, stop, start, fail, retry, ...")],
    reason: ReasonOption = None,
    version: VersionOption = None,
    detail: DetailOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Fire a lifecycle event on a node."""
    body = {"reason": reason, "version": version, "details": parse_pairs(detail) or None}
    emit(state(ctx).client().post(f"/nodes/{node}/actions/{event}", body), output)


@app.command()
def label(
    ctx: typer.Context,
    node: str,
    labels: Annotated[list[str], typer.Argument(help="KEY=VALUE to set, KEY- to remove.")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Set or remove labels on a node."""
    client = state(ctx).client()
    current = client.get(f"/nodes/{node}")
    merged = dict(current["labels"])
    for item in labels:
        if item.endswith("-") and "=" not in item:
            merged.pop(item[:-1], None)
        else:
            merged.update(parse_labels([item]))
    body = {"version": current["version"], "labels": merged}
    emit(client.patch(f"/nodes/{node}", body), output)


@app.command()
def token(
    ctx: typer.Context,
    node: str,
    seed: Annotated[
        Path | None,
        typer.Option(help="Also write the node's seed (JSON, mode 0600) to this file."),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Print a single-use bootstrap token for NODE (valid 15 minutes by default)."""
    issued = state(ctx).client().post(f"/nodes/{node}/bootstrap-tokens")
    if seed is not None:
        from powernode.bootstrap import write_private_file

        write_private_file(seed, json.dumps(issued["seed"], indent=2) + "\n")
    if output is OutputFormat.JSON:
        emit(issued, output)
    else:
        print(issued["token"])
        stderr.print(f"expires {issued['expires_at']}; single use")


@app.command()
def certs(ctx: typer.Context, node: str, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the certificates issued to NODE."""
    rows = state(ctx).client().get(f"/nodes/{node}/certificates")
    emit(rows, output, columns=("serial", "not_after", "revoked_at", "revocation_reason"))


@app.command()
def revoke(
    ctx: typer.Context,
    node: str,
    reason: Annotated[str, typer.Option(help="Why (recorded in the fleet event).")],
    serial: Annotated[str | None, typer.Option(help="One certificate; default: all.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Revoke NODE's certificates; the node must re-enroll with a new token."""
    body: dict[str, Any] = {"reason": reason}
    if serial is not None:
        body["serial"] = serial
    result = state(ctx).client().post(f"/nodes/{node}/certificates/revoke", body)
    if output is OutputFormat.JSON:
        emit(result, output)
    else:
        print("\n".join(result["revoked"]) or "nothing to revoke")


@app.command()
def console(
    ctx: typer.Context,
    node: str,
    tail_bytes: Annotated[
        int, typer.Option("--tail-bytes", min=1, help="Print at most this many last bytes.")
    ] = 64 * 1024,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output (every second).")
    ] = False,
) -> None:
    """Print NODE's serial console log (qemu nodes)."""
    client = state(ctx).client()
    data, size = _console(client, node, tail_bytes=tail_bytes)
    out = sys.stdout.buffer
    out.write(data)
    out.flush()
    while follow:
        time.sleep(1.0)
        data, size = _console(client, node, tail_bytes=16 * 1024 * 1024, since=size)
        if data:
            out.write(data)
            out.flush()


def _console(client: ApiClient, node: str, **params: int) -> tuple[bytes, int]:
    """Console bytes and the log's size (the `X-Console-Size` header)."""
    path = f"/api/v1/nodes/{node}/console"
    try:
        response = client._http.get(path, params=params)  # raw bytes, not JSON
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the control plane at {client.base_url} ({exc})", Category.UNAVAILABLE
        ) from exc
    if response.status_code >= 400:
        raise client._error(response)
    return response.content, int(response.headers.get("x-console-size", "0"))
