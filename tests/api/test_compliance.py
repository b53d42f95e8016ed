"""GET /api/v1/compliance/snapshot: any role may read it, it verifies, and it is audited."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from powernode.api.routes.compliance import router
from powernode.auth.models import ApiToken
from powernode.auth.roles import Role
from powernode.events.compliance import SnapshotInvalid, verify_document
from powernode.events.models import FleetEvent
from powernode.settings import Settings
from tests.api.conftest import Api

PATH = "/compliance/snapshot"


@pytest.fixture
def capi(api: Api) -> Api:
    """The API with the compliance router, whether or not app.py registers it yet."""
    if not any(getattr(r, "path", "") == f"/api/v1{PATH}" for r in api.app.routes):
        api.app.include_router(router, prefix="/api/v1")
    return api


def key_modes(keys: Path) -> tuple[int, ...]:
    paths = (keys, keys / "compliance-signing.pem", keys / "compliance-signing.pub.pem")
    return tuple(stat.S_IMODE(p.stat().st_mode) for p in paths)


def public_pem(api: Api) -> str:
    settings: Settings = api.app.state.settings
    return (settings.data_dir / "keys" / "compliance-signing.pub.pem").read_text()


async def seed(api: Api) -> None:
    template = await api.ok("POST", "/templates", json={"name": "web"})
    await api.ok(
        "POST",
        "/nodes",
        json={"name": "node-a", "template_id": template["id"], "labels": {"env": "prod"}},
    )
    await api.ok("POST", "/nodes", json={"name": "node-b"})
    await api.ok("POST", "/instances", json={"node": "node-a", "name": "vm-1", "kind": "vm"})


async def test_viewer_reads_a_snapshot_that_verifies(capi: Api) -> None:
    """A viewer's snapshot verifies with the key the control plane left in DATA_DIR/keys."""
    await seed(capi)
    response = await capi.call("GET", PATH, role=Role.VIEWER)
    assert response.status_code == 200, response.text
    document = response.json()
    result = verify_document(document, public_pem(capi))
    assert result.counts["nodes"] == 2
    assert result.counts["instances"] == 1
    assert result.counts["api_tokens"] == len(Role)
    assert document["snapshot"]["generated_at"] == "2026-11-01T12:00:00.000000Z"
    assert [n["labels"] for n in document["snapshot"]["nodes"]] == [{"env": "prod"}, {}]


async def test_snapshot_needs_a_token(capi: Api) -> None:
    """Without a bearer token the snapshot is refused."""
    assert (await capi.call("GET", PATH, role=None)).status_code == 401


async def test_key_is_kept_private_and_reused(capi: Api) -> None:
    """The key files get 0700/0600/0644 and two snapshots are signed by the same key."""
    first = await capi.ok("GET", PATH)
    second = await capi.ok("GET", PATH)
    assert first["signature"]["key_id"] == second["signature"]["key_id"]
    assert key_modes(capi.app.state.settings.data_dir / "keys") == (0o700, 0o600, 0o644)


async def test_snapshot_carries_no_token_secret(capi: Api) -> None:
    """No token the fixture minted, nor any stored hash, appears in the response."""
    response = await capi.call("GET", PATH)
    async with capi.db.read_sessions() as session:
        hashes = list(await session.scalars(select(ApiToken.secret_hash)))
    for secret in [*capi.tokens.values(), *hashes]:
        assert secret not in response.text


async def test_tampered_response_fails(capi: Api) -> None:
    """A node's state changed in the served document no longer verifies."""
    await seed(capi)
    document = await capi.ok("GET", PATH)
    document["snapshot"]["nodes"][0]["state"] = "ready"
    with pytest.raises(SnapshotInvalid):
        verify_document(json.loads(json.dumps(document)))


async def test_snapshot_is_recorded_as_an_event(capi: Api) -> None:
    """Each snapshot is a `compliance.snapshot` event naming the caller and the digest."""
    await seed(capi)
    response = await capi.call("GET", PATH, role=Role.VIEWER)
    document = response.json()
    events = await capi.ok("GET", "/events", params={"kind": "compliance.snapshot"})
    assert len(events["items"]) == 1
    item = events["items"][0]
    assert item["actor"].endswith(":test-viewer")
    assert item["payload"]["key_id"] == document["snapshot"]["key_id"]
    assert item["payload"]["counts"] == document["snapshot"]["counts"]
    assert item["payload"]["document_sha256"] == verify_document(document).document_sha256
    async with capi.db.read_sessions() as session:
        rows = await session.scalars(
            select(FleetEvent.id).where(FleetEvent.kind == "compliance.snapshot")
        )
        assert len(list(rows)) == 1
