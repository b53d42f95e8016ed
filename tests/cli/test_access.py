"""`powernode init` leaves a working CLI; tokens and roles as the CLI sees them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from powernode.testing import RunningServer

from .harness import Cli

pytestmark = pytest.mark.slow


def test_init_writes_a_private_credentials_file(server: RunningServer) -> None:
    """init saves the server URL and the admin token in a file only its owner can read."""
    path = server.data_dir / "cli-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": server.url, "token": server.token}


def test_cli_works_right_after_init_with_no_more_setup(cli: Cli) -> None:
    """With only the data directory known, the CLI finds the server and token from init."""
    bare = cli.without_url()
    assert "POWERNODE_TOKEN" not in bare.env
    assert bare.json("node", "list") == []
    assert bare.json("token", "list")[0]["role"] == "admin"


def test_viewer_token_can_read_but_not_write(cli: Cli) -> None:
    """A viewer token lists nodes; creating one exits 4 with a one-line error, no traceback."""
    created = cli.json("token", "create", "--name", "dashboard", "--role", "viewer")
    assert created["role"] == "viewer"
    assert created["token"].startswith(f"pn_{created['token_id']}_")
    viewer = cli.with_token(created["token"])

    assert isinstance(viewer.json("node", "list"), list)
    refused = viewer.fails("node", "create", "sneaky")
    assert refused.returncode == 4
    assert "sneaky" not in cli.run("node", "list").stdout


def test_the_issue_example_token_create_viewer_json(cli: Cli) -> None:
    """`powernode token create --role viewer --output json` works as written: no name needed."""
    created = cli.json("token", "create", "--role", "viewer", "--output", "json")
    assert created["token"].startswith("pn_")
    assert (created["name"], created["role"]) == ("viewer token", "viewer")


def test_token_create_table_shows_the_secret_once(cli: Cli) -> None:
    """The table form prints the secret on its own line and says it will not be shown again."""
    out = cli.run("token", "create", "--name", "ci", "--role", "operator").stdout
    secret = next(line for line in out.splitlines() if line.startswith("pn_"))
    assert "shown once" in out
    assert secret not in cli.run("token", "list").stdout
    assert cli.with_token(secret).json("node", "list") == []


def test_revoked_token_is_refused(cli: Cli) -> None:
    """token revoke by public id stops the token at once (exit 3, unauthorized)."""
    created = cli.json("token", "create", "--name", "short-lived", "--expires-in-days", "1")
    assert created["expires_at"] is not None
    revoked = cli.json("token", "revoke", created["token_id"])
    assert revoked["revoked_at"] is not None
    assert cli.with_token(created["token"]).fails("node", "list").returncode == 3


def test_unknown_role_is_a_usage_error(cli: Cli) -> None:
    """A role outside viewer/operator/admin is refused before any request is sent."""
    result = cli.run("token", "create", "--name", "x", "--role", "root", ok=False)
    assert result.returncode == 2
    assert "root" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("node", "create"), "Missing argument 'name'"),
        (("node", "list", "--bogus"), "No such option: --bogus"),
        (("module", "select"), "Missing argument 'directory'"),
        (("node", "list", "-o", "yaml"), "'yaml'"),
    ],
)
def test_usage_errors_are_one_line_with_a_help_hint(
    cli: Cli, argv: tuple[str, ...], says: str
) -> None:
    """Typer's multi-line box is replaced by one `error:` line that says where help is; exit 2."""
    result = cli.run(*argv, ok=False)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert says in line
    assert "--help')" in line


def test_init_prints_json_for_scripts(cli: Cli, tmp_path: Path) -> None:
    """`init -o json` gives the token (or null when one exists) and where it was saved."""
    env_cli = Cli({**cli.env, "POWERNODE_DATA_DIR": str(tmp_path / "other")})
    first = env_cli.json("init")
    assert first["token"].startswith("pn_")
    assert first["credentials_path"].endswith("cli-credentials.json")
    assert first["database"].startswith("sqlite:///")
    assert env_cli.json("init")["token"] is None
