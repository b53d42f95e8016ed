"""Nodes through the API: CRUD, filters, pagination, lifecycle actions, concurrency."""

from __future__ import annotations

import uuid

from powernode.auth.roles import Role
from tests.api.conftest import Api


async def test_create_get_and_list_a_node(api: Api) -> None:
    created = await api.ok("POST", "/nodes", json={"name": "web-1", "labels": {"env": "prod"}})
    assert created["state"] == "pending"
    assert created["desired_state"] == "running"
    assert created["version"] == 1
    assert created["allowed_events"] == ["provision", "fail", "terminate"]
    by_name = await api.ok("GET", "/nodes/web-1")
    by_id = await api.ok("GET", f"/nodes/{created['id']}")
    assert by_name == by_id == created
    page = await api.ok("GET", "/nodes")
    assert [n["name"] for n in page["items"]] == ["web-1"]
    assert page["next_cursor"] is None


async def test_creating_a_node_records_an_event_with_the_request_correlation_id(api: Api) -> None:
    correlation = str(uuid.uuid4())
    response = await api.call(
        "POST", "/nodes", json={"name": "web-1"}, headers={"X-Correlation-ID": correlation}
    )
    assert response.headers["x-correlation-id"] == correlation
    events = await api.ok("GET", "/events", params={"correlation_id": correlation})
    assert [e["kind"] for e in events["items"]] == ["node.created"]
    assert events["items"][0]["actor"].endswith(":test-admin")


async def test_duplicate_node_name_is_a_conflict(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "web-1"})
    response = await api.call("POST", "/nodes", json={"name": "web-1"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]


async def test_pagination_walks_every_node_once_in_creation_order(api: Api) -> None:
    names = [f"n-{i:03d}" for i in range(25)]
    for name in names:
        await api.ok("POST", "/nodes", json={"name": name})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = await api.ok("GET", "/nodes", params=params)
        seen += [n["name"] for n in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3


async def test_a_garbled_cursor_is_refused_with_the_field_named(api: Api) -> None:
    response = await api.call("GET", "/nodes", params={"cursor": "!!!"})
    assert response.status_code == 422
    assert response.json()["field"] == "cursor"


async def test_label_selector_filters_in_the_database(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "a", "labels": {"env": "prod", "tier": "web"}})
    await api.ok("POST", "/nodes", json={"name": "b", "labels": {"env": "prod", "tier": "db"}})
    await api.ok("POST", "/nodes", json={"name": "c", "labels": {"env": "dev"}})
    await api.ok("POST", "/nodes", json={"name": "d"})

    async def names(selector: str) -> list[str]:
        page = await api.ok("GET", "/nodes", params={"selector": selector})
        return [n["name"] for n in page["items"]]

    assert await names("env=prod") == ["a", "b"]
    assert await names("env=prod,tier!=db") == ["a"]
    assert await names("tier") == ["a", "b"]
    assert await names("!tier") == ["c", "d"]
    assert await names("env in (dev, prod)") == ["a", "b", "c"]
    assert await names("env notin (prod)") == ["c", "d"]
    bad = await api.call("GET", "/nodes", params={"selector": "env=="})
    assert bad.status_code == 200  # empty value is valid: matches nothing here
    bad = await api.call("GET", "/nodes", params={"selector": "in (x"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "selector"


async def test_filters_by_state_and_creation_time(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "early"})
    api.clock.advance(__import__("datetime").timedelta(hours=1))
    await api.ok("POST", "/nodes", json={"name": "late"})
    await api.ok("POST", "/nodes/late/actions/provision")
    page = await api.ok("GET", "/nodes", params={"state": "provisioning"})
    assert [n["name"] for n in page["items"]] == ["late"]
    page = await api.ok("GET", "/nodes", params={"created_after": "2026-11-01T12:30:00Z"})
    assert [n["name"] for n in page["items"]] == ["late"]
    page = await api.ok("GET", "/nodes", params={"created_before": "2026-11-01T12:30:00Z"})
    assert [n["name"] for n in page["items"]] == ["early"]


async def test_a_stale_version_is_refused_with_409_and_the_current_version(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "web-1"})
    first = await api.ok("PATCH", "/nodes/web-1", json={"version": 1, "labels": {"a": "1"}})
    assert first["version"] == 2
    assert first["labels"] == {"a": "1"}
    stale = await api.call("PATCH", "/nodes/web-1", json={"version": 1, "labels": {"a": "2"}})
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    assert (await api.ok("GET", "/nodes/web-1"))["labels"] == {"a": "1"}
    action = await api.call("POST", "/nodes/web-1/actions/provision", json={"version": 1})
    assert action.status_code == 409
    delete = await api.call("DELETE", "/nodes/web-1", params={"version": 1})
    assert delete.status_code == 409


async def test_lifecycle_actions_follow_the_table_and_record_events(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "web-1"})
    for event, state in [
        ("provision", "provisioning"),
        ("ready", "running"),
        ("drain", "draining"),
        ("stop", "stopped"),
        ("start", "provisioning"),
    ]:
        node = await api.ok("POST", f"/nodes/web-1/actions/{event}")
        assert node["state"] == state
    assert node["desired_state"] == "running"
    refused = await api.call("POST", "/nodes/web-1/actions/undrain")
    assert refused.status_code == 409
    body = refused.json()
    assert body["state"] == "provisioning"
    assert body["allowed_events"] == ["ready", "fail", "terminate"]
    assert refused.headers["content-type"] == "application/problem+json"
    failed = await api.ok("POST", "/nodes/web-1/actions/fail", json={"reason": "disk gone"})
    assert (failed["state"], failed["failure_reason"]) == ("failed", "disk gone")
    retried = await api.ok("POST", "/nodes/web-1/actions/retry")
    assert (retried["state"], retried["failure_reason"]) == ("provisioning", None)
    events = await api.ok("GET", "/events", params={"subject_id": node["id"], "kind": "node.*"})
    kinds = [e["kind"] for e in events["items"]]
    assert kinds == [
        "node.created",
        "node.provision",
        "node.ready",
        "node.drain",
        "node.stop",
        "node.start",
        "node.fail",
        "node.retry",
    ]
    fail_event = events["items"][6]
    assert fail_event["severity"] == "critical"
    assert fail_event["payload"] == {"from": "provisioning", "to": "failed", "reason": "disk gone"}


async def test_fail_needs_a_reason(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "web-1"})
    response = await api.call("POST", "/nodes/web-1/actions/fail")
    assert response.status_code == 422
    assert response.json()["field"] == "reason"


async def test_system_events_need_an_admin(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "web-1"})
    await api.ok("POST", "/nodes/web-1/actions/provision")
    response = await api.call("POST", "/nodes/web-1/actions/ready", role=Role.OPERATOR)
    assert response.status_code == 403
    assert response.json()["required_permission"] == "override"


async def test_delete_needs_a_terminated_node(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "web-1"})
    await api.ok("POST", "/nodes/web-1/actions/provision")
    refused = await api.call("DELETE", "/nodes/web-1")
    assert refused.status_code == 409
    assert "terminate it" in refused.json()["detail"]
    await api.ok("POST", "/nodes/web-1/actions/terminate")
    response = await api.call("DELETE", "/nodes/web-1")
    assert response.status_code == 204
    assert (await api.call("GET", "/nodes/web-1")).status_code == 404


async def test_references_to_missing_objects_are_refused(api: Api) -> None:
    missing = str(uuid.uuid4())
    response = await api.call("POST", "/nodes", json={"name": "web-1", "template_id": missing})
    assert response.status_code == 422
    assert response.json()["field"] == "template_id"
    assert (await api.call("GET", "/nodes", params={"limit": 0})).status_code == 422


async def test_node_documents_have_exactly_the_documented_shape(api: Api) -> None:
    """Node routes build plain documents for speed; they must match NodeOut field for field."""
    from powernode.fleet.nodes import NodeOut

    await api.ok("POST", "/nodes", json={"name": "web-1", "labels": {"b": "2", "a": "1"}})
    for document in [
        await api.ok("GET", "/nodes/web-1"),
        (await api.ok("GET", "/nodes"))["items"][0],
        await api.ok("POST", "/nodes/web-1/actions/provision"),
    ]:
        parsed = NodeOut.model_validate(document)
        assert parsed.model_dump(mode="json") == document
        assert list(document["labels"]) == ["a", "b"]
