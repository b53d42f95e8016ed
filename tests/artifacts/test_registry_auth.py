"""Registry logins: htpasswd (Basic) and token (Bearer) authentication, both real."""

from __future__ import annotations

from pathlib import Path

import pytest

from powernode.artifacts.auth import parse_challenge
from powernode.artifacts.registry import Credentials, pull, push_layout
from powernode.errors import Unauthorized
from powernode.modules.store import ContentStore
from tests.artifacts.factories import build
from tests.artifacts.servers import PASSWORD, USER, Registry, TokenServer

LOGIN = Credentials(USER, PASSWORD)


def layout(store: ContentStore, root: Path) -> Path:
    with build(store) as artifact:
        artifact.write_layout(root, tag="1.0")
    return root


def test_basic_auth_pushes_and_pulls_with_the_login(
    store: ContentStore, tmp_path: Path, basic_registry: Registry, repo: str
) -> None:
    """With the htpasswd login a push and a pull work; the password is never in a repr."""
    ref = basic_registry.ref(repo, "1.0")
    result = push_layout(layout(store, tmp_path / "layout"), ref, credentials=LOGIN)
    assert pull(ref, tmp_path / "pulled", credentials=LOGIN).digest == result.digest
    assert PASSWORD not in repr(LOGIN)


def test_basic_auth_without_or_with_a_wrong_login_is_unauthorized(
    store: ContentStore, tmp_path: Path, basic_registry: Registry, repo: str
) -> None:
    """No login and a wrong password are both Unauthorized, naming the registry."""
    ref = basic_registry.ref(repo, "1.0")
    with pytest.raises(Unauthorized, match=f"registry {basic_registry.host} needs a login"):
        pull(ref, tmp_path / "pulled")
    with pytest.raises(Unauthorized, match=f"on {basic_registry.host}/{repo} failed: HTTP 401"):
        push_layout(layout(store, tmp_path / "layout"), ref, credentials=Credentials(USER, "wrong"))


def test_bearer_tokens_are_fetched_for_the_scope_the_registry_asks(
    store: ContentStore,
    tmp_path: Path,
    token_registry: Registry,
    token_server: TokenServer,
    repo: str,
) -> None:
    """The client follows the Bearer challenge to the token server, with its basic login."""
    ref = token_registry.ref(repo, "1.0")
    result = push_layout(layout(store, tmp_path / "layout"), ref, credentials=LOGIN)
    assert pull(ref, tmp_path / "pulled", credentials=LOGIN).digest == result.digest
    asked = [scope.rpartition(":") for scopes in token_server.scopes for scope in scopes]
    actions = [set(wanted.split(",")) for name, _, wanted in asked if name == f"repository:{repo}"]
    assert {"pull", "push"} in actions  # docker-registry lists them in either order
    assert {"pull"} in actions


def test_bearer_without_a_login_is_refused_by_the_token_server(
    tmp_path: Path, token_registry: Registry, token_server: TokenServer, repo: str
) -> None:
    """An anonymous client gets no token: Unauthorized, naming the token endpoint."""
    refused_before = token_server.refused
    with pytest.raises(Unauthorized, match=r"token endpoint .* refused a token") as caught:
        pull(token_registry.ref(repo, "1.0"), tmp_path / "pulled")
    assert "no credentials given" in caught.value.detail
    assert token_server.refused == refused_before + 1


def test_challenges_are_parsed_with_quoted_and_bare_parameters() -> None:
    """`WWW-Authenticate` parameters may be quoted (with commas and spaces) or bare."""
    challenge = parse_challenge(
        'Bearer realm="https://auth.example/token",service=registry.example,'
        'scope="repository:a/b:pull,push repository:c:pull"'
    )
    assert challenge is not None
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push repository:c:pull",
    }
    assert parse_challenge("") is None
