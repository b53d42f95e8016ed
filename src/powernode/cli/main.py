"""`powernode`: the root command, `init`, `serve`, and the nouns."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Typer vendors Click from 0.29 on (pyproject pins it); its exceptions live here, not in `click`.
from typer._click import exceptions as click_errors

from powernode.cli.output import EXIT_CODES, OutputFormat, error
from powernode.errors import PowernodeError

# Imported where used: the HTTP client, the settings (pydantic) and asyncio take most of the
# CLI's start-up time, which commands like `module select` do not need.
if TYPE_CHECKING:
    from powernode.pki.ca import CertificateAuthority
    from powernode.settings import Settings

_CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="powernode",
    help="Fleet control plane: nodes, instances, tasks, templates, providers, events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=_CONTEXT,
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="Control plane URL \\[env: POWERNODE_URL].")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="API token \\[env: POWERNODE_TOKEN].", show_default=False)
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory \\[env: POWERNODE_DATA_DIR].")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="Database for init, serve and worker \\[env: POWERNODE_DATABASE_URL; "
            "default: SQLite in the data dir].",
            show_default=False,
        ),
    ] = None,
) -> None:
    from powernode.cli.common import CliState

    overrides = {"url": url, "token": token, "data_dir": data_dir, "database_url": database_url}
    ctx.obj = CliState(overrides={k: v for k, v in overrides.items() if v is not None})


@app.command()
def init(
    ctx: typer.Context,
    rotate: Annotated[
        bool, typer.Option("--rotate-token", help="Mint a new admin token even if one exists.")
    ] = False,
    output: Annotated[
        OutputFormat,
        typer.Option(
            "--output", "-o", help="table for people, json for scripts.", case_sensitive=False
        ),
    ] = OutputFormat.TABLE,
) -> None:
    """Create the data directory, migrate the database and mint the first admin token."""
    import asyncio

    from powernode.bootstrap import initialize
    from powernode.cli.common import state
    from powernode.cli.output import emit_json, stdout
    from powernode.db.migrate import shown_url

    result = asyncio.run(initialize(state(ctx).settings(), rotate=rotate))
    shown = shown_url(result.database_url)
    if output is OutputFormat.JSON:
        emit_json(
            {
                "database": shown,
                "token": result.token,
                "credentials_path": str(result.credentials_path),
            }
        )
        return
    stdout.print(f"database ready: {shown}")
    if result.token is None:
        stdout.print(
            f"an admin token already exists; the CLI uses {result.credentials_path} "
            "(use --rotate-token for a new one)"
        )
        return
    stdout.print("admin token (shown once; saved for this machine's CLI):")
    print(result.token)
    stdout.print(f"saved to {result.credentials_path} (mode 0600)")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address \\[default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port \\[default: 8080].")] = None,
    node_port: Annotated[
        int | None, typer.Option(help="Port of the mTLS node API \\[default: 8443].")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the control plane: operator API (/api/v1, /healthz, /readyz, /metrics) and the node
    API (/node/v1, mutual TLS) on its own port."""
    import asyncio
    import gc

    import uvicorn

    from powernode.api.app import create_app
    from powernode.api.node.server import node_server_config, serve_both
    from powernode.cli.common import state
    from powernode.db.migrate import check_at_head
    from powernode.pki.runtime import node_host, write_server_tls

    overrides = {
        k: v
        for k, v in {"host": host, "port": port, "node_port": node_port}.items()
        if v is not None
    }
    settings = state(ctx).settings(**overrides)
    asyncio.run(check_at_head(settings.effective_database_url))
    tls = write_server_tls(settings, asyncio.run(_shared_ca(settings)))
    app = create_app(settings)
    operator = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=log_level, proxy_headers=False
    )
    node = node_server_config(
        app.state.node_app,
        tls,
        host=node_host(settings),
        port=settings.node_port,
        log_level=log_level,
    )
    # Fewer, later collections: with thousands of agent connections the default gen-0 threshold
    # triggers full passes over long-lived objects often enough to show in the p99 of heartbeats.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    asyncio.run(serve_both(operator, node))


async def _shared_ca(settings: Settings) -> CertificateAuthority:
    from powernode.db.engine import Database
    from powernode.pki.runtime import open_ca

    db = Database(settings.effective_database_url)
    try:
        return await open_ca(db, settings, create=True)
    finally:
        await db.dispose()


def _register_nouns() -> None:
    from powernode.cli import nouns
    from powernode.cli.worker import worker

    app.command()(worker)
    nouns.register(app)


def _module_select(argv: list[str]) -> None:
    """`powernode module select ARGS` with only its own imports (see `cli/module_select.py`)."""
    from powernode.cli.module_select import run_select, select, simple_arguments

    arguments = simple_arguments(argv)
    if arguments is not None:
        run_select(*arguments)
        return
    command = typer.Typer(
        pretty_exceptions_enable=False, add_completion=False, context_settings=_CONTEXT
    )
    command.command()(select)
    _exit_with(
        command(args=argv, prog_name=f"powernode {sys.argv[1]} select", standalone_mode=False)
    )


def _exit_with(result: Any) -> None:
    """Outside standalone mode Click returns a command's `typer.Exit(code)` instead of exiting."""
    if isinstance(result, int) and result != 0:
        sys.exit(result)


def run() -> None:
    """Console-script entry point: one clear line on stderr and an exit code per category."""
    try:
        if sys.argv[1:3] in (["module", "select"], ["modules", "select"]):
            _module_select(sys.argv[3:])
        else:
            _register_nouns()
            # Not standalone: usage errors come here too, to be one line like every other error
            # (Typer's own report is a multi-line box).
            _exit_with(app(standalone_mode=False))
    except click_errors.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(exc.exit_code)
    except click_errors.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        error(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        error(exc.format_message())
        sys.exit(exc.exit_code)
    except typer.Abort:
        error("aborted")
        sys.exit(1)
    except BrokenPipeError:  # `powernode ... | head`: the reader left; nothing to say
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush
        sys.exit(1)
    except PowernodeError as exc:
        error(exc.detail)
        sys.exit(EXIT_CODES[exc.category])
    except OSError as exc:  # local files: unreadable module tree, unwritable --out, ...
        where = f"{exc.filename}: " if exc.filename else ""
        error(f"{where}{exc.strerror or exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        from powernode.cli.client import CliError  # not before: it imports httpx

        if not isinstance(exc, CliError):
            raise
        error(exc.message)
        sys.exit(EXIT_CODES[exc.category])
