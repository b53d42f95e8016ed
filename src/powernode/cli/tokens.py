"""`powernode token ...`"""

from __future__ import annotations

from typing import Annotated

import typer

from powernode.auth.roles import Role
from powernode.cli.common import LimitOption, OutputOption, state
from powernode.cli.output import OutputFormat, emit, emit_object, stdout

app = typer.Typer(help="API tokens: who may call the control plane.", no_args_is_help=True)

COLUMNS = ("name", "role", "token_id", "created_at", "expires_at", "revoked_at", "last_used_at")


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Option(help="What the token is for [default: '<role> token'].")
    ] = None,
    role: Annotated[Role, typer.Option(help="viewer, operator or admin.")] = Role.VIEWER,
    expires_in_days: Annotated[
        int | None, typer.Option(help="Days until expiry [default: never].")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Mint a token; its secret is printed once and never again."""
    body = {"name": name or f"{role.value} token", "role": role, "expires_in_days": expires_in_days}
    created = state(ctx).client().post("/tokens", body)
    if output is OutputFormat.JSON:
        emit(created, output)
        return
    secret = created.pop("token")
    emit_object(created)
    stdout.print("\n[bold yellow]token (shown once; store it now):[/bold yellow]")
    print(secret)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: LimitOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List tokens (never their secrets)."""
    emit(state(ctx).client().paginate("/tokens", limit=limit), output, columns=COLUMNS)


@app.command()
def revoke(
    ctx: typer.Context,
    token: Annotated[str, typer.Argument(help="Row id or public token id.")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Revoke a token; it stops working at once."""
    emit(state(ctx).client().post(f"/tokens/{token}/revoke"), output)
