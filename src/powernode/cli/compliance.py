"""`powernode compliance ...`: signed fleet snapshots for auditors, verified offline."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from powernode.cli.client import CliError
from powernode.cli.common import OutputOption, state
from powernode.cli.output import OutputFormat, emit_json, stderr

app = typer.Typer(
    help="Compliance: signed snapshots of the fleet, verifiable offline.", no_args_is_help=True
)


@app.command()
def snapshot(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file [default: stdout].")
    ] = None,
) -> None:
    """Fetch a signed snapshot of the whole fleet; it is checked before it is written."""
    from powernode.events.compliance import verify_document

    document = state(ctx).client().get("/compliance/snapshot")
    verified = verify_document(document)
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if out is None:
        print(text, end="")
        return
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc}") from exc
    stderr.print(f"wrote {out}: {verified.summary()}", highlight=False)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="A snapshot written by 'compliance snapshot'.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="PEM public key to pin (DATA_DIR/keys/compliance-signing.pub.pem); the "
            "snapshot must be signed by it.",
        ),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Check a snapshot's signature locally; exits non-zero if any byte of it was changed."""
    from powernode.events.compliance import parse_document, verify_document

    try:
        raw = file.read_bytes()
        pinned = public_key.read_bytes() if public_key is not None else None
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    verified = verify_document(parse_document(raw), pinned)
    if output is OutputFormat.JSON:
        emit_json({"verified": True, **dataclasses.asdict(verified)})
    else:
        print(verified.summary())
