"""The edge of the operator API: the caller is refused (401, 403) before anything about the
request is, and text holding NUL is refused with 422 naming the field on both databases."""

from __future__ import annotations

from typing import Any

import pytest

from powernode.auth.roles import Role
from tests.api.conftest import Api

MALFORMED = b"{not json"


async def post_raw(api: Api, path: str, role: Role | None, body: bytes = MALFORMED) -> Any:
    return await api.call(
        "POST", path, role=role, content=body, headers={"Content-Type": "application/json"}
    )


@pytest.mark.parametrize(
    ("path", "role", "status"),
    [
        ("/nodes", None, 401),
        ("/nodes", Role.VIEWER, 403),
        ("/tokens", Role.VIEWER, 403),
        ("/tokens", Role.OPERATOR, 403),
        ("/provider-accounts", Role.OPERATOR, 403),
        ("/nodes/seed/actions/ready", Role.OPERATOR, 403),  # a system event needs override
        ("/nodes", Role.OPERATOR, 422),
        ("/tokens", Role.ADMIN, 422),
    ],
    ids=str,
)
async def test_a_malformed_body_is_refused_only_after_the_caller_is_authorized(
    api: Api, path: str, role: Role | None, status: int
) -> None:
    await api.ok("POST", "/nodes", json={"name": "seed"})
    response = await post_raw(api, path, role)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if status == 422:
        assert response.json()["errors"] == [{"field": "body", "message": "JSON decode error"}]


async def test_the_refusal_of_a_malformed_body_names_the_real_actor(api: Api) -> None:
    await post_raw(api, "/tokens", Role.VIEWER)
    await post_raw(api, "/nodes", Role.OPERATOR)
    await post_raw(api, "/nodes", None)
    events = await api.ok("GET", "/events", params={"kind": "api.refused"})
    refused = [(e["payload"]["status"], e["actor"].rsplit(":", 1)[-1]) for e in events["items"]]
    assert refused == [(403, "test-viewer"), (422, "test-operator"), (401, "anonymous")]


async def test_a_body_that_is_not_utf8_is_refused_after_the_caller(api: Api) -> None:
    response = await post_raw(api, "/nodes", None, b'{"name": "\xff"}')
    assert response.status_code == 401
    response = await post_raw(api, "/nodes", Role.ADMIN, b'{"name": "\xff"}')
    assert response.status_code in (400, 422)


NUL = "\x00"

# (method, path, query, body, field): each request would reach the database with a NUL.
NUL_CASES: list[tuple[str, str, dict[str, str] | None, Any, str]] = [
    ("GET", "/nodes/a%00b", None, None, "node"),
    ("GET", "/templates/a%00", None, None, "template"),
    ("GET", "/provider-accounts/a%00", None, None, "account"),
    ("GET", "/events", {"kind": f"a{NUL}"}, None, "kind"),
    ("GET", "/nodes", {"selector": f"env={NUL}"}, None, "selector"),
    ("POST", "/templates", None, {"name": "t", "description": f"a{NUL}"}, "description"),
    ("POST", "/nodes", None, {"name": "n", "labels": {f"a{NUL}": "b"}}, "labels"),
    ("POST", "/nodes", None, {"name": "n", "labels": {"a": f"b{NUL}"}}, "labels.a"),
    ("POST", "/instances", None, {"node": f"seed{NUL}", "name": "i", "kind": "vm"}, "node"),
    (
        "POST",
        "/instances",
        None,
        {"node": "seed", "name": "i", "kind": "container", "spec": {"env": {"A": NUL}}},
        "spec.env.A",
    ),
    ("POST", "/tasks", None, {"kind": "noop", "node": f"seed{NUL}"}, "node"),
    (
        "POST",
        "/tasks",
        None,
        {"kind": "shell", "node": "seed", "payload": {"argv": ["ls", f"/{NUL}"]}},
        "payload.argv.1",
    ),
    (
        "POST",
        "/provider-accounts",
        None,
        {"name": "p", "kind": "aws", "settings": {"region": f"eu{NUL}"}},
        "settings.region",
    ),
    (
        "POST",
        "/provider-accounts",
        None,
        {"name": "p", "kind": "aws", "settings": {NUL: 1}},
        "settings",
    ),
    ("POST", "/nodes/seed/actions/fail", None, {"reason": f"disk{NUL}"}, "reason"),
    ("POST", "/tokens", None, f"{NUL}", "body"),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "field"), NUL_CASES, ids=str)
async def test_a_nul_character_is_refused_with_422_naming_the_field(
    api: Api, method: str, path: str, query: dict[str, str] | None, body: Any, field: str
) -> None:
    await api.ok("POST", "/nodes", json={"name": "seed"})
    response = await api.call(method, path, params=query, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == field
    assert problem["errors"] == [{"field": field, "message": problem["detail"]}]
    assert "NUL" in problem["detail"]
    # The refusal is audited even though what was refused cannot be stored as it is.
    events = await api.ok("GET", "/events", params={"kind": "api.refused"})
    assert [e["payload"]["status"] for e in events["items"]] == [422]


async def test_a_nul_character_does_not_hide_a_missing_token(api: Api) -> None:
    response = await api.call("GET", "/nodes/a%00b", role=None)
    assert response.status_code == 401
    response = await api.call("POST", "/tokens", role=Role.VIEWER, json={"name": NUL})
    assert response.status_code == 403


async def test_text_the_database_cannot_store_is_a_422_on_every_listener(api: Api) -> None:
    """Outside /api/v1 (here the iPXE route) the database's own refusal is mapped to 422."""
    response = await api.http.get("/boot/v1/a%00b/amd64/boot.ipxe")
    assert response.status_code in (404, 422), response.text  # SQLite stores it: not found
    if api.db.engine.dialect.name == "postgresql":
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] is None
