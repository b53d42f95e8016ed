"""Instances, tasks, templates and provider accounts through the API."""

from __future__ import annotations

import uuid

from tests.api.conftest import Api


async def test_instance_spec_is_validated_per_kind(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "host"})
    vm = await api.ok(
        "POST",
        "/instances",
        json={"node": "host", "name": "vm-1", "kind": "vm", "spec": {"vcpus": 2}},
    )
    assert vm["spec"] == {"vcpus": 2, "memory_mib": 512, "disk_gib": 10, "image": None}
    bad = await api.call(
        "POST",
        "/instances",
        json={"node": "host", "name": "c-1", "kind": "container", "spec": {"command": "ls"}},
    )
    assert bad.status_code == 422
    detail = bad.json()["detail"]
    assert "spec.image" in detail
    assert "spec.command" in detail
    unknown = await api.call(
        "POST", "/instances", json={"node": "host", "name": "x", "kind": "lxc", "spec": {}}
    )
    assert unknown.status_code == 422
    assert "known: container, docker, k3s, vm" in unknown.json()["detail"]


async def test_instance_lifecycle_update_and_delete(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "host"})
    vm = await api.ok("POST", "/instances", json={"node": "host", "name": "vm-1", "kind": "vm"})
    path = f"/instances/{vm['id']}"
    updated = await api.ok("PATCH", path, json={"version": 1, "spec": {"vcpus": 4}})
    assert (updated["spec"]["vcpus"], updated["version"]) == (4, 2)
    for event in ("provision", "ready", "stop"):
        vm = await api.ok("POST", f"{path}/actions/{event}")
    assert (vm["state"], vm["desired_state"]) == ("stopped", "stopped")
    assert (await api.call("DELETE", path)).status_code == 409
    await api.ok("POST", f"{path}/actions/terminate")
    assert (await api.call("DELETE", path)).status_code == 204
    listed = await api.ok("GET", "/instances", params={"kind": "vm"})
    assert listed["items"] == []


async def test_a_node_with_live_instances_cannot_be_deleted(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "host"})
    await api.ok("POST", "/instances", json={"node": "host", "name": "vm-1", "kind": "vm"})
    await api.ok("POST", "/nodes/host/actions/terminate")
    response = await api.call("DELETE", "/nodes/host")
    assert response.status_code == 409
    assert "instance" in response.json()["detail"]


async def test_task_lease_fail_and_retry_follow_attempts(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "host"})
    task = await api.ok(
        "POST",
        "/tasks",
        json={"kind": "shell", "node": "host", "payload": {"argv": ["true"]}, "max_attempts": 2},
    )
    path = f"/tasks/{task['id']}"
    assert task["payload"] == {"argv": ["true"], "timeout_s": 300, "env": {}}
    leased = await api.ok("POST", f"{path}/actions/lease", json={"lease_seconds": 60})
    assert (leased["state"], leased["attempts"], leased["fencing_epoch"]) == ("leased", 1, 1)
    assert leased["lease_holder"].endswith(":test-admin")
    requeued = await api.ok("POST", f"{path}/actions/fail", json={"result": {"rc": 1}})
    assert (requeued["state"], requeued["lease_holder"]) == ("pending", None)
    await api.ok("POST", f"{path}/actions/lease")
    await api.ok("POST", f"{path}/actions/start")
    failed = await api.ok("POST", f"{path}/actions/fail", json={"result": {"rc": 2}})
    assert (failed["state"], failed["attempts"], failed["result"]) == ("failed", 2, {"rc": 2})
    assert failed["finished_at"] is not None
    retried = await api.ok("POST", f"{path}/actions/retry")
    assert (retried["state"], retried["attempts"], retried["fencing_epoch"]) == ("pending", 0, 2)
    cancelled = await api.ok("POST", f"{path}/actions/cancel")
    assert cancelled["state"] == "cancelled"
    assert (await api.call("DELETE", path)).status_code == 204


async def test_a_task_needs_exactly_one_valid_target_and_a_valid_payload(api: Api) -> None:
    await api.ok("POST", "/nodes", json={"name": "host"})
    neither = await api.call("POST", "/tasks", json={"kind": "noop"})
    assert neither.status_code == 422
    assert "exactly one target" in neither.json()["detail"]
    missing = await api.call("POST", "/tasks", json={"kind": "noop", "node": "nope"})
    assert missing.status_code == 404
    bad = await api.call("POST", "/tasks", json={"kind": "shell", "node": "host", "payload": {}})
    assert bad.status_code == 422
    assert "payload.argv" in bad.json()["detail"]
    running = await api.ok("POST", "/tasks", json={"kind": "noop", "node": "host"})
    assert (await api.call("DELETE", f"/tasks/{running['id']}")).status_code == 409


async def test_templates_keep_module_order_and_refuse_duplicates(api: Api) -> None:
    modules = [{"name": "base", "version": "1.0"}, {"name": "docker", "version": "24.0.7"}]
    created = await api.ok("POST", "/templates", json={"name": "web", "modules": modules})
    assert created["modules"] == modules
    swapped = await api.ok("PATCH", "/templates/web", json={"version": 1, "modules": modules[::-1]})
    assert swapped["modules"] == modules[::-1]
    dupe = await api.call(
        "POST", "/templates", json={"name": "x", "modules": [modules[0], modules[0]]}
    )
    assert dupe.status_code == 422
    assert "more than once: base" in dupe.json()["detail"]
    await api.ok("POST", "/nodes", json={"name": "n1", "template_id": created["id"]})
    in_use = await api.call("DELETE", "/templates/web")
    assert in_use.status_code == 409


async def test_provider_accounts_refuse_secrets_in_settings(api: Api) -> None:
    response = await api.call(
        "POST",
        "/provider-accounts",
        json={"name": "aws", "kind": "aws", "settings": {"nested": {"secret_access_key": "x"}}},
    )
    assert response.status_code == 422
    assert "credentials_ref" in response.json()["detail"]
    bad_ref = await api.call(
        "POST",
        "/provider-accounts",
        json={"name": "aws", "kind": "aws", "credentials_ref": "hunter2"},
    )
    assert bad_ref.status_code == 422
    assert bad_ref.json()["errors"][0]["field"] == "credentials_ref"


async def test_provider_catalog_regions_zones_and_instance_types(api: Api) -> None:
    account = await api.ok(
        "POST",
        "/provider-accounts",
        json={
            "name": "aws",
            "kind": "aws",
            "settings": {"default_region": "eu-west-1"},
            "credentials_ref": "env:AWS_PROFILE",
        },
    )
    region = await api.ok("POST", "/provider-accounts/aws/regions", json={"name": "eu-west-1"})
    zone = await api.ok(
        "POST", "/provider-accounts/aws/regions/eu-west-1/zones", json={"name": "eu-west-1a"}
    )
    await api.ok(
        "POST",
        "/provider-accounts/aws/instance-types",
        json={"name": "t3.micro", "vcpus": 2, "memory_mib": 1024},
    )
    zones = await api.ok("GET", "/provider-accounts/aws/regions/eu-west-1/zones")
    assert [z["name"] for z in zones["items"]] == ["eu-west-1a"]
    types = await api.ok("GET", "/provider-accounts/aws/instance-types")
    assert types["items"][0]["arch"] == "amd64"
    node = await api.ok(
        "POST",
        "/nodes",
        json={
            "name": "n1",
            "provider_account_id": account["id"],
            "region_id": region["id"],
            "zone_id": zone["id"],
        },
    )
    assert node["zone_id"] == zone["id"]
    mismatched = await api.call("POST", "/nodes", json={"name": "n2", "region_id": region["id"]})
    assert mismatched.status_code == 422
    assert mismatched.json()["field"] == "region_id"
    listed = await api.ok("GET", "/nodes", params={"provider_account_id": account["id"]})
    assert [n["name"] for n in listed["items"]] == ["n1"]
    assert (await api.call("DELETE", "/provider-accounts/aws")).status_code == 409
    no_region = await api.call(
        "POST", "/provider-accounts/aws/regions/nowhere/zones", json={"name": "z"}
    )
    assert no_region.status_code == 422


async def test_problem_documents_carry_type_title_status_detail(api: Api) -> None:
    response = await api.call("GET", f"/nodes/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "correlation_id"}
    assert body["status"] == 404
    assert body["type"] == "urn:powernode:problem:not-found"
    unknown = await api.http.get("/api/v1/nothing-here")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"


async def test_validation_errors_name_every_bad_field(api: Api) -> None:
    response = await api.call("POST", "/nodes", json={"name": "UPPER", "arch": "sparc"})
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"name", "arch"}
    not_json = await api.call(
        "POST", "/nodes", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert "Traceback" not in not_json.text


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["migration"] == ready.json()["head"]


async def test_interactive_docs_are_served_without_a_cdn(api: Api) -> None:
    page = await api.http.get("/api/v1/docs")
    assert page.status_code == 200
    assert "/api/v1/docs/static/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    script = await api.http.get("/api/v1/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert len(script.content) > 100_000


async def test_catalog_rows_can_be_removed_unless_nodes_use_them(api: Api) -> None:
    account = await api.ok("POST", "/provider-accounts", json={"name": "os", "kind": "openstack"})
    region = await api.ok("POST", "/provider-accounts/os/regions", json={"name": "r1"})
    zone = await api.ok("POST", "/provider-accounts/os/regions/r1/zones", json={"name": "z1"})
    await api.ok("POST", "/provider-accounts/os/regions/r1/zones", json={"name": "z2"})
    await api.ok(
        "POST",
        "/provider-accounts/os/instance-types",
        json={"name": "m1.small", "vcpus": 1, "memory_mib": 2048},
    )
    await api.ok(
        "POST",
        "/nodes",
        json={
            "name": "n1",
            "provider_account_id": account["id"],
            "region_id": region["id"],
            "zone_id": zone["id"],
        },
    )
    assert (await api.call("DELETE", "/provider-accounts/os/regions/r1")).status_code == 409
    assert (
        await api.call("DELETE", "/provider-accounts/os/regions/r1/zones/z1")
    ).status_code == 409
    assert (
        await api.call("DELETE", "/provider-accounts/os/regions/r1/zones/z2")
    ).status_code == 204
    assert (
        await api.call("DELETE", "/provider-accounts/os/regions/r1/zones/z2")
    ).status_code == 404
    assert (
        await api.call("DELETE", "/provider-accounts/os/instance-types/m1.small")
    ).status_code == 204
    await api.ok("POST", "/nodes/n1/actions/terminate")
    await api.ok("DELETE", "/nodes/n1")
    assert (await api.call("DELETE", "/provider-accounts/os/regions/r1")).status_code == 204
    zones = await api.call("GET", "/provider-accounts/os/regions/r1/zones")
    assert zones.status_code == 422
    events = await api.ok("GET", "/events", params={"kind": "provider_account.*"})
    assert [e["kind"] for e in events["items"]][-3:] == [
        "provider_account.zone_removed",
        "provider_account.instance_type_removed",
        "provider_account.region_removed",
    ]


async def test_catalog_rows_are_read_updated_and_deleted_with_versions(api: Api) -> None:
    """Regions, zones and instance types: GET one, PATCH with the version read, a stale version
    is a 409 naming the current one, DELETE honours ?version=, every change is an event."""
    await api.ok("POST", "/provider-accounts", json={"name": "gcp", "kind": "gcp"})
    base = "/provider-accounts/gcp"
    await api.ok("POST", f"{base}/regions", json={"name": "europe-west4"})
    await api.ok("POST", f"{base}/regions/europe-west4/zones", json={"name": "europe-west4-a"})
    await api.ok(
        "POST", f"{base}/instance-types", json={"name": "e2-small", "vcpus": 2, "memory_mib": 2048}
    )

    region = await api.ok("GET", f"{base}/regions/europe-west4")
    assert (region["version"], region["display_name"]) == (1, None)
    renamed = await api.ok(
        "PATCH", f"{base}/regions/europe-west4", json={"version": 1, "display_name": "Eemshaven"}
    )
    assert (renamed["display_name"], renamed["version"]) == ("Eemshaven", 2)
    stale = await api.call(
        "PATCH", f"{base}/regions/europe-west4", json={"version": 1, "display_name": "x"}
    )
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2

    zone = await api.ok("GET", f"{base}/regions/europe-west4/zones/europe-west4-a")
    assert (zone["name"], zone["version"]) == ("europe-west4-a", 1)
    assert (await api.call("GET", f"{base}/regions/europe-west4/zones/nope")).status_code == 404

    itype = await api.ok(
        "PATCH", f"{base}/instance-types/e2-small", json={"version": 1, "memory_mib": 4096}
    )
    assert (itype["vcpus"], itype["memory_mib"], itype["version"]) == (2, 4096, 2)
    assert (await api.ok("GET", f"{base}/instance-types/e2-small"))["memory_mib"] == 4096
    bad = await api.call(
        "PATCH", f"{base}/instance-types/e2-small", json={"version": 2, "vcpus": 0}
    )
    assert bad.status_code == 422

    stale_delete = await api.call("DELETE", f"{base}/instance-types/e2-small?version=1")
    assert stale_delete.status_code == 409
    gone = await api.call("DELETE", f"{base}/instance-types/e2-small?version=2")
    assert gone.status_code == 204
    assert (await api.call("GET", f"{base}/instance-types/e2-small")).status_code == 404

    events = await api.ok("GET", "/events", params={"kind": "provider_account.*"})
    kinds = [e["kind"] for e in events["items"]]
    assert "provider_account.region_updated" in kinds
    assert "provider_account.instance_type_updated" in kinds
    assert "provider_account.instance_type_removed" in kinds


async def test_a_live_task_gets_a_new_retry_budget(api: Api) -> None:
    """PATCH /tasks/{id} changes max_attempts while the task lives; never below the attempts
    made, never on a finished task; the change is a `task.updated` event."""
    await api.ok("POST", "/nodes", json={"name": "host"})
    task = await api.ok("POST", "/tasks", json={"kind": "noop", "node": "host", "max_attempts": 1})
    path = f"/tasks/{task['id']}"
    await api.ok("POST", f"{path}/actions/lease")
    raised = await api.ok("PATCH", path, json={"version": 2, "max_attempts": 5})
    assert (raised["max_attempts"], raised["version"]) == (5, 3)
    below = await api.call("PATCH", path, json={"version": 3, "max_attempts": 0})
    assert below.status_code == 422
    stale = await api.call("PATCH", path, json={"version": 1, "max_attempts": 4})
    assert stale.status_code == 409
    await api.ok("POST", f"{path}/actions/cancel")
    done = await api.ok("GET", path)
    final = await api.call("PATCH", path, json={"version": done["version"], "max_attempts": 9})
    assert final.status_code == 409
    assert "final" in final.json()["detail"]
    events = await api.ok("GET", "/events", params={"subject_id": task["id"]})
    updated = [e for e in events["items"] if e["kind"] == "task.updated"]
    assert [e["payload"]["max_attempts"] for e in updated] == [{"from": 1, "to": 5}]
