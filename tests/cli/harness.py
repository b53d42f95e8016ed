"""The real CLI, run as a subprocess against a real control plane (see `powernode.testing`)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, replace
from typing import Any

from powernode.testing import POWERNODE, RunningServer


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def describe(self) -> str:
        command = " ".join(("powernode", *self.argv))
        return f"{command} exited {self.returncode}\n{self.stdout}{self.stderr}"


@dataclass(frozen=True)
class Cli:
    """`powernode` with POWERNODE_DATA_DIR and POWERNODE_URL set; the token comes from the
    credentials file `init` wrote unless `with_token` sets POWERNODE_TOKEN."""

    env: dict[str, str]

    @classmethod
    def for_server(cls, server: RunningServer) -> Cli:
        # COLUMNS: wide tables, so cells are not truncated in assertions.
        return cls({**server.env, "COLUMNS": "250"})

    def with_token(self, token: str) -> Cli:
        return replace(self, env={**self.env, "POWERNODE_TOKEN": token})

    def without_url(self) -> Cli:
        return replace(self, env={k: v for k, v in self.env.items() if k != "POWERNODE_URL"})

    def run(self, *argv: str, ok: bool = True, stdin: str | None = None) -> Result:
        """Run the CLI; with `ok`, fail the test unless it exits 0."""
        proc = subprocess.run(
            [POWERNODE, *argv],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
        if ok and result.returncode != 0:
            raise AssertionError(result.describe())
        return result

    def json(self, *argv: str) -> Any:
        """Run the CLI with `-o json` and parse what it printed."""
        return self.run(*argv, "-o", "json").json()

    def fails(self, *argv: str) -> Result:
        """Run the CLI expecting a failure reported as one 'error:' line and no traceback."""
        result = self.run(*argv, ok=False)
        assert result.returncode != 0, result.describe()
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.describe()
        assert lines[0].startswith("error: "), result.describe()
        assert "Traceback" not in result.stdout + result.stderr
        return result
