"""Answering registry authentication challenges: `Basic`, and `Bearer` via a token endpoint.

A request goes out anonymously (or with what worked before for its repository); on a 401 the
registry's `WWW-Authenticate` header says what it wants. `Basic`: the registry's credentials.
`Bearer realm=...,service=...,scope=...`: a token from the realm (sent the basic credentials
when there are some), kept per (registry, repository) for the life of the client.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from powernode.errors import Unauthorized, Unavailable

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


@dataclass(frozen=True)
class Credentials:
    """A registry login; the password (or personal access token) stays out of `repr`."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The scheme and parameters of a `WWW-Authenticate` header, or None when it has none."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


class RegistryAuth:
    """What to send to each registry, learnt from its challenges; one per client."""

    def __init__(self, http: httpx.AsyncClient, credentials: Mapping[str, Credentials]) -> None:
        self.http = http
        self.credentials = dict(credentials)
        self.tokens: dict[tuple[str, str], str] = {}
        self.basic: set[str] = set()

    def headers(self, registry: str, repository: str) -> dict[str, str]:
        """The Authorization header for a request to `repository`, when one is known."""
        token = self.tokens.get((registry, repository))
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        login = self.credentials.get(registry)
        if registry in self.basic and login is not None:
            return {"Authorization": login.basic()}
        return {}

    async def answer(self, registry: str, repository: str, header: str, what: str) -> bool:
        """Prepare to answer the challenge `header`; whether the request is worth sending again."""
        challenge = parse_challenge(header)
        login = self.credentials.get(registry)
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            if login is None:
                raise Unauthorized(
                    f"registry {registry} needs a login for {what} on {repository}; "
                    "give credentials for it",
                    registry=registry,
                    repository=repository,
                )
            if registry in self.basic:
                return False  # they were sent and refused
            self.basic.add(registry)
            return True
        if challenge.scheme == "bearer":
            token = await self._token(registry, repository, challenge, login, what)
            if self.tokens.get((registry, repository)) == token:
                return False  # the same token again would be refused again
            self.tokens[(registry, repository)] = token
            return True
        return False

    async def _token(
        self,
        registry: str,
        repository: str,
        challenge: Challenge,
        login: Credentials | None,
        what: str,
    ) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise Unauthorized(f"registry {registry} asked for a bearer token without a realm")
        params: dict[str, str | list[str]] = {"scope": challenge.params.get("scope", "").split()}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {"Authorization": login.basic()} if login is not None else {}
        try:
            response = await self.http.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach the token endpoint {realm} of registry {registry}: {exc}"
            ) from exc
        if response.status_code != 200:
            raise Unauthorized(
                f"the token endpoint {realm} of registry {registry} refused a token for "
                f"{what} on {repository} (HTTP {response.status_code}"
                f"{'' if login else ', no credentials given'})",
                registry=registry,
                repository=repository,
            )
        try:
            doc = response.json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise Unauthorized(f"the token endpoint {realm} of registry {registry} sent no token")
        return token
