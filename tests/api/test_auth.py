"""Authentication and the role x action matrix: each role may do exactly what its permissions
allow; every refusal is a 401/403 problem and an audited fleet event."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from powernode.api.app import API_PREFIX, create_app
from powernode.auth.roles import Permission, Role, allows
from powernode.settings import Settings
from tests.api.conftest import Api

READ, OPERATE = Permission.READ, Permission.OPERATE
TOKENS, PROVIDERS, TRUST = (
    Permission.MANAGE_TOKENS,
    Permission.MANAGE_PROVIDERS,
    Permission.MANAGE_TRUST,
)
PUBLIC = None

# What each operation of /api/v1 needs. The test below derives the operations from the app's
# OpenAPI document: a route missing here, or here but gone, fails it.
NEEDS: dict[str, Permission | None] = {
    "GET /nodes": READ,
    "POST /nodes": OPERATE,
    "GET /nodes/{node}": READ,
    "PATCH /nodes/{node}": OPERATE,
    "DELETE /nodes/{node}": OPERATE,
    "GET /nodes/{node}/console": READ,
    "POST /nodes/{node}/actions/{event}": OPERATE,
    "POST /nodes/{node}/bootstrap-tokens": OPERATE,
    "GET /nodes/{node}/certificates": READ,
    "POST /nodes/{node}/certificates/revoke": OPERATE,
    "GET /instances": READ,
    "POST /instances": OPERATE,
    "GET /instances/{instance_id}": READ,
    "PATCH /instances/{instance_id}": OPERATE,
    "DELETE /instances/{instance_id}": OPERATE,
    "POST /instances/{instance_id}/actions/{event}": OPERATE,
    "GET /tasks": READ,
    "POST /tasks": OPERATE,
    "GET /tasks/{task_id}": READ,
    "PATCH /tasks/{task_id}": OPERATE,
    "DELETE /tasks/{task_id}": OPERATE,
    "POST /tasks/{task_id}/actions/{event}": OPERATE,
    "GET /templates": READ,
    "POST /templates": OPERATE,
    "GET /templates/{template}": READ,
    "PATCH /templates/{template}": OPERATE,
    "DELETE /templates/{template}": OPERATE,
    "GET /templates/{template}/preview": READ,
    "GET /templates/{template}/manifest": READ,
    "GET /provider-accounts": READ,
    "POST /provider-accounts": PROVIDERS,
    "GET /provider-accounts/{account}": READ,
    "PATCH /provider-accounts/{account}": PROVIDERS,
    "DELETE /provider-accounts/{account}": PROVIDERS,
    "GET /provider-accounts/{account}/regions": READ,
    "POST /provider-accounts/{account}/regions": PROVIDERS,
    "GET /provider-accounts/{account}/regions/{region}": READ,
    "PATCH /provider-accounts/{account}/regions/{region}": PROVIDERS,
    "DELETE /provider-accounts/{account}/regions/{region}": PROVIDERS,
    "GET /provider-accounts/{account}/regions/{region}/zones": READ,
    "POST /provider-accounts/{account}/regions/{region}/zones": PROVIDERS,
    "GET /provider-accounts/{account}/regions/{region}/zones/{zone}": READ,
    "DELETE /provider-accounts/{account}/regions/{region}/zones/{zone}": PROVIDERS,
    "GET /provider-accounts/{account}/instance-types": READ,
    "POST /provider-accounts/{account}/instance-types": PROVIDERS,
    "GET /provider-accounts/{account}/instance-types/{name}": READ,
    "PATCH /provider-accounts/{account}/instance-types/{name}": PROVIDERS,
    "DELETE /provider-accounts/{account}/instance-types/{name}": PROVIDERS,
    "GET /modules": READ,
    "POST /modules/{name}/versions": OPERATE,
    "GET /modules/{name}/versions/{version}": READ,
    "GET /modules/{name}/versions/{version}/entries": READ,
    "GET /modules/{name}/trust-policy": READ,
    "PUT /modules/{name}/trust-policy": TRUST,
    "DELETE /modules/{name}/trust-policy": TRUST,
    "POST /modules/{name}/versions/{version}/signatures": OPERATE,
    "GET /modules/{name}/versions/{version}/signatures": READ,
    "GET /modules/{name}/versions/{version}/verification": READ,
    "GET /blobs/{sha256}": READ,
    "GET /tokens": TOKENS,
    "POST /tokens": TOKENS,
    "POST /tokens/{token}/revoke": TOKENS,
    "GET /events": READ,
    "GET /events/chains/{correlation_id}": READ,
    "GET /events/stream": READ,
    "GET /compliance/snapshot": READ,
    "GET /pki/crl": PUBLIC,
    "GET /signing/roots": READ,
    "POST /signing/certificate": OPERATE,
    "HEAD /images/blobs/{sha256}": READ,
    "PUT /images/blobs/{sha256}": OPERATE,
    "POST /images": OPERATE,
    "GET /images": READ,
    "GET /images/{artifact_id}": READ,
}

# Lifecycle actions: an operator's event, and a system event that also needs OVERRIDE.
EVENTS = {
    "/nodes/{node}/actions/{event}": ("provision", "ready"),
    "/instances/{instance_id}/actions/{event}": ("provision", "ready"),
    "/tasks/{task_id}/actions/{event}": ("cancel", "lease"),
}

# Bodies an allowed role's request succeeds with (others get `{}`, refused as 422 at worst).
BODIES: dict[str, Any] = {
    "POST /nodes": {"name": "new-node"},
    "PATCH /nodes/{node}": {"version": 1, "labels": {"a": "b"}},
    "POST /instances": {"node": "seed-node", "name": "vm-2", "kind": "vm", "spec": {}},
    "POST /tasks": {"kind": "noop", "node": "seed-node"},
    "POST /templates": {"name": "new-template"},
    "PATCH /templates/{template}": {"version": 1, "description": "changed"},
    "POST /provider-accounts": {
        "name": "aws-2",
        "kind": "aws",
        "credentials_ref": "env:AWS_PROFILE",
    },
    "POST /provider-accounts/{account}/regions": {"name": "eu-west-1"},
    "POST /provider-accounts/{account}/regions/{region}/zones": {"name": "eu-a2"},
    "POST /provider-accounts/{account}/instance-types": {
        "name": "big",
        "vcpus": 8,
        "memory_mib": 8192,
    },
    "POST /tokens": {"name": "ci", "role": "viewer"},
    "POST /nodes/{node}/certificates/revoke": {"reason": "test"},
    "PUT /modules/{name}/trust-policy": {"identities": []},
}

# The event stream never ends for a caller it admits: a bad filter ends it once admitted.
QUERIES = {"GET /events/stream": {"severity": "not-a-severity"}}


def operations(app: FastAPI) -> dict[str, dict[str, Any]]:
    """Every operation of the operator API, as "METHOD /path" under /api/v1."""
    found = {}
    for path, item in app.openapi()["paths"].items():
        if path.startswith(API_PREFIX + "/"):
            for method, operation in item.items():
                found[f"{method.upper()} {path.removeprefix(API_PREFIX)}"] = operation
    return found


def test_every_operation_of_the_operator_api_is_classified(tmp_path: Path) -> None:
    ops = operations(create_app(Settings(data_dir=tmp_path)))
    assert sorted(set(ops) - set(NEEDS)) == [], "new routes: say what they need in NEEDS"
    assert sorted(set(NEEDS) - set(ops)) == [], "routes gone: remove them from NEEDS"


@dataclass(frozen=True)
class Call:
    operation: str
    path: str
    needs: tuple[Permission, ...]
    has_body: bool


async def seeded(api: Api) -> dict[str, str]:
    """Objects every path parameter names, so an allowed call reaches its handler."""
    await api.ok("POST", "/templates", json={"name": "seed-template"})
    await api.ok("POST", "/provider-accounts", json={"name": "seed-account", "kind": "qemu"})
    await api.ok("POST", "/provider-accounts/seed-account/regions", json={"name": "eu"})
    await api.ok("POST", "/provider-accounts/seed-account/regions/eu/zones", json={"name": "eu-a"})
    await api.ok(
        "POST",
        "/provider-accounts/seed-account/instance-types",
        json={"name": "small", "vcpus": 1, "memory_mib": 512},
    )
    await api.ok("POST", "/nodes", json={"name": "seed-node"})
    instance = await api.ok(
        "POST", "/instances", json={"node": "seed-node", "name": "vm-1", "kind": "vm"}
    )
    task = await api.ok("POST", "/tasks", json={"kind": "noop", "node": "seed-node"})
    token = await api.ok("POST", "/tokens", json={"name": "seed-token"})
    return {
        "node": "seed-node",
        "instance_id": instance["id"],
        "task_id": task["id"],
        "template": "seed-template",
        "account": "seed-account",
        "region": "eu",
        "zone": "eu-a",
        "name": "small",  # an instance type, and a module (not imported: 404)
        "version": "1.0",
        "sha256": "0" * 64,
        "token": token["token_id"],
        "correlation_id": str(uuid.uuid4()),
        "artifact_id": str(uuid.uuid4()),
    }


def calls(app: FastAPI, ids: dict[str, str]) -> list[Call]:
    """One call per operation (two for an action: an operator's event and a system event);
    deletes last, so the objects the others name still exist."""
    found = []
    for operation, spec in operations(app).items():
        permission = NEEDS[operation]
        needs = () if permission is None else (permission,)
        template = operation.split(" ", 1)[1]
        has_body = "requestBody" in spec
        events = EVENTS.get(template, (None,))
        for event, extra in zip(events, [(), (Permission.OVERRIDE,)], strict=False):
            path = template.format(**ids, event=event)
            found.append(Call(operation, path, needs + extra, has_body))
    return sorted(found, key=lambda call: call.operation.startswith("DELETE"))


async def check(api: Api, role: Role | None, call: Call, **kwargs: Any) -> None:
    method = call.operation.split(" ", 1)[0]
    params = QUERIES.get(call.operation)
    response = await api.call(method, call.path, role=role, params=params, **kwargs)
    context = (role, call.operation, call.path, response.status_code, response.text[:300])
    if call.needs and role is None:
        assert response.status_code == 401, context
    elif role is not None and not all(allows(role, p) for p in call.needs):
        assert response.status_code == 403, context
        if method != "HEAD":
            problem = response.json()
            assert problem["type"] == "urn:powernode:problem:forbidden"
            # The first permission checked that the role lacks (operate before override).
            assert problem["required_permission"] == next(
                p for p in call.needs if not allows(role, p)
            )
    else:
        assert response.status_code not in (401, 403), context
        assert response.status_code < 500, context


@pytest.mark.parametrize("role", [None, *Role], ids=str)
async def test_each_role_may_do_exactly_what_its_permissions_allow(
    api: Api, role: Role | None
) -> None:
    """Every operation: no token is 401, a role without the permission 403, an allowed role
    anything else but a 5xx. A malformed body changes none of that: the caller comes first."""
    ids = await seeded(api)
    for call in calls(api.app, ids):
        if call.has_body:
            await check(
                api,
                role,
                call,
                content=b"{not json",
                headers={"Content-Type": "application/json"},
            )
        body = BODIES.get(call.operation, {}) if call.has_body else None
        await check(api, role, call, json=body)


async def test_every_refusal_is_an_audited_fleet_event(api: Api) -> None:
    """401 and 403 as critical events, 404, 409 and 422 as routine ones, each with its actor."""
    await api.ok("POST", "/nodes", json={"name": "n1"})
    await api.call("POST", "/nodes", role=Role.VIEWER, json={"name": "x"})  # 403
    await api.call("GET", "/nodes", role=None)  # 401
    await api.call("GET", "/nodes/missing", role=Role.VIEWER)  # 404, domain
    await api.call("GET", "/no-such-route", role=Role.VIEWER)  # 404, routing
    await api.call("POST", "/nodes", role=Role.OPERATOR, json={"name": "n1"})  # 409, duplicate
    await api.call("POST", "/nodes/n1/actions/stop", role=Role.OPERATOR)  # 409, transition
    await api.call("PATCH", "/nodes/n1", role=Role.OPERATOR, json={"version": 9})  # 409, stale
    await api.call("POST", "/nodes", role=Role.OPERATOR, json={})  # 422, validation
    await api.call("GET", "/nodes", role=Role.VIEWER, params={"selector": "-"})  # 422, domain
    events = await api.ok("GET", "/events", params={"kind": "api.refused"})
    refused = [
        (e["payload"]["status"], e["actor"].rsplit(":", 1)[-1], e["severity"])
        for e in events["items"]
    ]
    assert refused == [
        (403, "test-viewer", "critical"),
        (401, "anonymous", "critical"),
        (404, "test-viewer", "routine"),
        (404, "anonymous", "routine"),  # no route, so no route said who may call it
        (409, "test-operator", "routine"),
        (409, "test-operator", "routine"),
        (409, "test-operator", "routine"),
        (422, "test-operator", "routine"),
        (422, "test-viewer", "routine"),
    ]
    first = events["items"][0]
    assert first["payload"]["method"] == "POST"
    assert first["payload"]["path"] == "/api/v1/nodes"
    assert first["subject_type"] == "api"


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer pn_000000000000_secret"],
)
async def test_missing_or_bad_credentials_get_401_problem(api: Api, header: str) -> None:
    headers = {"Authorization": header} if header else {}
    response = await api.call("GET", "/nodes", role=None, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["status"] == 401


async def test_a_token_is_shown_once_and_works_until_revoked(api: Api) -> None:
    created = await api.ok("POST", "/tokens", json={"name": "ci", "role": "operator"})
    secret = created["token"]
    listed = await api.ok("GET", "/tokens")
    assert all("token" not in t and "secret_hash" not in t for t in listed["items"])
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await api.call("GET", "/nodes", role=None, headers=headers)).status_code == 200
    await api.ok("POST", f"/tokens/{created['token_id']}/revoke")
    response = await api.call("GET", "/nodes", role=None, headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    again = await api.call("POST", f"/tokens/{created['id']}/revoke")
    assert again.status_code == 409


async def test_a_token_stops_working_when_it_expires(api: Api) -> None:
    created = await api.ok(
        "POST", "/tokens", json={"name": "short", "role": "viewer", "expires_in_days": 1}
    )
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert (await api.call("GET", "/nodes", role=None, headers=headers)).status_code == 200
    api.clock.advance(dt.timedelta(days=1, seconds=1))
    response = await api.call("GET", "/nodes", role=None, headers=headers)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


async def test_only_a_hash_of_the_secret_is_stored(api: Api) -> None:
    created = await api.ok("POST", "/tokens", json={"name": "ci", "role": "viewer"})
    secret_part = created["token"].split("_", 2)[2]
    from sqlalchemy import text

    async with api.db.sessions() as session:
        rows = (await session.execute(text("SELECT secret_hash FROM api_tokens"))).all()
    assert all(secret_part not in row[0] for row in rows)
    assert all(len(row[0]) == 64 for row in rows)
