"""Fixtures for the supply-chain tests: real registries (one per kind, for the session).

Tests needing docker-registry or skopeo fail, never skip, when they are missing: `make setup`
installs them. Each test uses repositories named after itself, so sharing a registry is safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.modules.store import ContentStore
from tests.artifacts.servers import (
    Registry,
    TokenServer,
    htpasswd_auth,
    running,
    start_registry,
)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry without authentication, over plain HTTP."""
    with running(start_registry(tmp_path_factory.mktemp("registry"))) as server:
        yield server


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with htpasswd (Basic) authentication for servers.USER."""
    workdir = tmp_path_factory.mktemp("basic-registry")
    with running(start_registry(workdir, htpasswd_auth(workdir))) as server:
        yield server


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    tokens = TokenServer(tmp_path_factory.mktemp("tokens"))
    try:
        yield tokens
    finally:
        tokens.close()


@pytest.fixture(scope="session")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer
) -> Iterator[Registry]:
    """docker-registry with token (Bearer) authentication against `token_server`."""
    workdir = tmp_path_factory.mktemp("token-registry")
    with running(start_registry(workdir, token_server.registry_auth())) as server:
        yield server


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"tests/{name[:100]}"


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")
