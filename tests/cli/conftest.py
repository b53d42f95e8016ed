"""One real control plane per test module (SQLite), and the CLI pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from powernode.testing import RunningServer, running_server

from .harness import Cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`powernode init` + `powernode serve` on a free port; stopped after the module."""
    with running_server(tmp_path_factory.mktemp("control-plane")) as srv:
        yield srv


@pytest.fixture
def cli(server: RunningServer) -> Cli:
    """The CLI as `init` left it for the admin: token from the credentials file."""
    return Cli.for_server(server)
