"""Authentication and the role x action matrix: each role may do exactly what its permissions
allow; every refusal is a 401/403 problem and an audited fleet event."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from powernode.auth.roles import Permission, Role, allows
from tests.api.conftest import Api


@dataclass(frozen=True)
class Action:
    method: str
    path: str
    permission: Permission
    body: dict[str, Any] | None = None


# Paths use objects created by `seeded`; each write is valid, so an allowed role gets 2xx/409,
# never 401/403.
ACTIONS = [
    Action("GET", "/nodes", Permission.READ),
    Action("GET", "/nodes/seed-node", Permission.READ),
    Action("POST", "/nodes", Permission.OPERATE, {"name": "new-node"}),
    Action("PATCH", "/nodes/seed-node", Permission.OPERATE, {"version": 1, "labels": {"a": "b"}}),
    Action("POST", "/nodes/seed-node/actions/provision", Permission.OPERATE),
    Action("POST", "/nodes/seed-node/actions/ready", Permission.OVERRIDE),
    Action("DELETE", "/nodes/seed-node", Permission.OPERATE),
    Action("GET", "/instances", Permission.READ),
    Action(
        "POST",
        "/instances",
        Permission.OPERATE,
        {"node": "seed-node", "name": "vm-2", "kind": "vm", "spec": {}},
    ),
    Action("POST", "/instances/{instance}/actions/provision", Permission.OPERATE),
    Action("GET", "/tasks", Permission.READ),
    Action("POST", "/tasks", Permission.OPERATE, {"kind": "noop", "node": "seed-node"}),
    Action("POST", "/tasks/{task}/actions/cancel", Permission.OPERATE),
    Action("POST", "/tasks/{task}/actions/lease", Permission.OVERRIDE),
    Action("GET", "/templates", Permission.READ),
    Action("POST", "/templates", Permission.OPERATE, {"name": "new-template"}),
    Action("DELETE", "/templates/seed-template", Permission.OPERATE),
    Action("GET", "/provider-accounts", Permission.READ),
    Action(
        "POST",
        "/provider-accounts",
        Permission.MANAGE_PROVIDERS,
        {"name": "aws-2", "kind": "aws", "credentials_ref": "env:AWS_PROFILE"},
    ),
    Action(
        "POST",
        "/provider-accounts/seed-account/regions",
        Permission.MANAGE_PROVIDERS,
        {"name": "eu-west-1"},
    ),
    Action("DELETE", "/provider-accounts/seed-account", Permission.MANAGE_PROVIDERS),
    Action("GET", "/tokens", Permission.MANAGE_TOKENS),
    Action("POST", "/tokens", Permission.MANAGE_TOKENS, {"name": "ci", "role": "viewer"}),
    Action("GET", "/events", Permission.READ),
]


async def seeded(api: Api) -> dict[str, str]:
    await api.ok("POST", "/templates", json={"name": "seed-template"})
    await api.ok("POST", "/provider-accounts", json={"name": "seed-account", "kind": "qemu"})
    await api.ok("POST", "/nodes", json={"name": "seed-node"})
    instance = await api.ok(
        "POST", "/instances", json={"node": "seed-node", "name": "vm-1", "kind": "vm"}
    )
    task = await api.ok("POST", "/tasks", json={"kind": "noop", "node": "seed-node"})
    return {"instance": instance["id"], "task": task["id"]}


@pytest.mark.parametrize("role", list(Role), ids=str)
async def test_each_role_may_do_exactly_what_its_permissions_allow(api: Api, role: Role) -> None:
    ids = await seeded(api)
    for action in ACTIONS:
        path = action.path.format(**ids)
        response = await api.call(action.method, path, role=role, json=action.body)
        if allows(role, action.permission):
            assert response.status_code not in (401, 403), (role, action, response.text)
        else:
            assert response.status_code == 403, (role, action, response.text)
            problem = response.json()
            # The first permission checked that the role lacks (operate before override).
            assert not allows(role, Permission(problem["required_permission"]))
            assert problem["type"] == "urn:powernode:problem:forbidden"


async def test_every_refusal_is_an_audited_fleet_event(api: Api) -> None:
    await api.call("POST", "/nodes", role=Role.VIEWER, json={"name": "x"})
    await api.call("GET", "/nodes", role=None)
    events = await api.ok("GET", "/events", params={"kind": "api.refused"})
    refused = [(e["payload"]["status"], e["actor"], e["severity"]) for e in events["items"]]
    assert refused == [
        (403, f"token:{api.tokens[Role.VIEWER].split('_')[1]}:test-viewer", "critical"),
        (401, "anonymous", "critical"),
    ]


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
