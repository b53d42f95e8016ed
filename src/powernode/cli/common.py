"""Shared CLI state: settings built from the environment plus root flags, and the API client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from powernode.cli.client import ApiClient
from powernode.cli.output import OutputFormat, emit_json
from powernode.settings import Settings


@dataclass
class CliState:
    overrides: dict[str, Any] = field(default_factory=dict)
    _client: ApiClient | None = None

    def settings(self, **extra: Any) -> Settings:
        return Settings(**{**self.overrides, **extra})

    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.settings())
        return self._client


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output", "-o", help="table for people, json for scripts.", case_sensitive=False
    ),
]

LimitOption = Annotated[int | None, typer.Option(help="At most this many.")]
VersionOption = Annotated[int | None, typer.Option(help="Refuse unless at this version.")]
StateOption = Annotated[str | None, typer.Option("--state", help="Only in this state.")]
ReasonOption = Annotated[str | None, typer.Option(help="Why (required for fail).")]
DetailOption = Annotated[
    list[str] | None, typer.Option("--detail", help="KEY=VALUE recorded in the event.")
]


def emit_deleted(kind: str, ref: str, output: OutputFormat) -> None:
    """Say that `kind` `ref` is gone: a line for people, `{"deleted": ...}` for scripts."""
    if output is OutputFormat.JSON:
        emit_json({"deleted": kind, "ref": ref})
    else:
        typer.echo(f"deleted {kind} {ref}")


def report(output: OutputFormat, line: str, data: dict[str, Any]) -> None:
    """What a command did: `line` for people, `data` as JSON for scripts."""
    if output is OutputFormat.JSON:
        emit_json(data)
    else:
        from powernode.cli.output import stdout

        stdout.print(line)
