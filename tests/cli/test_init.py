"""`powernode init` and `serve` against databases that are missing, refuse us, or lost the CLI's
copy of the token: one clear line, never a password, nothing half done."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from powernode.testing import POWERNODE, free_port

pytestmark = pytest.mark.slow


def run(data_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "POWERNODE_DATA_DIR": str(data_dir), **env}
    full_env.pop("POWERNODE_TOKEN", None)
    if "POWERNODE_DATABASE_URL" not in env:
        full_env.pop("POWERNODE_DATABASE_URL", None)
    return subprocess.run(
        [POWERNODE, *argv], env=full_env, capture_output=True, text=True, timeout=60
    )


def test_init_mints_a_token_again_when_the_credentials_file_is_gone(tmp_path: Path) -> None:
    """A usable admin token alone does not help a CLI that lost its copy: init writes a new one."""
    first = run(tmp_path, "init")
    assert first.returncode == 0, first.stderr
    credentials = tmp_path / "cli-credentials.json"
    old_token = json.loads(credentials.read_text())["token"]

    again = run(tmp_path, "init")
    assert again.returncode == 0, again.stderr
    assert json.loads(credentials.read_text())["token"] == old_token  # still there: kept

    credentials.unlink()
    healed = run(tmp_path, "init")
    assert healed.returncode == 0, healed.stderr
    assert json.loads(credentials.read_text())["token"] != old_token
    assert credentials.stat().st_mode & 0o777 == 0o600


def test_init_with_a_refused_login_is_one_line_without_the_password(tmp_path: Path) -> None:
    """PostgreSQL refusing the role is the operator's to fix: one `error:` line, password hidden."""
    url = "postgresql://no_such_role_pn:S3cretPW@127.0.0.1:5432/no_such_db_pn"
    result = run(tmp_path, "init", POWERNODE_DATABASE_URL=url)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "error: cannot use the database at postgresql://no_such_role_pn:***@"
    )
    assert "S3cretPW" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_serve_on_an_unreachable_database_hides_the_password(tmp_path: Path) -> None:
    """The root `--database-url` flag works like POWERNODE_DATABASE_URL."""
    url = f"postgresql://someone:S3cretPW@127.0.0.1:{free_port()}/x"
    result = run(tmp_path, "--database-url", url, "serve", "--port", str(free_port()))
    assert result.returncode != 0
    assert "S3cretPW" not in result.stderr + result.stdout
    assert "someone:***@" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_before_init_says_to_run_init(tmp_path: Path) -> None:
    result = run(tmp_path / "never-initialized", "serve", "--port", str(free_port()))
    assert result.returncode != 0
    assert "run 'powernode init' first" in result.stderr
    assert not (tmp_path / "never-initialized" / "powernode.db").exists()
