"""Each noun's create/list/show/action/delete through the real CLI, and the events they leave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .harness import Cli

pytestmark = pytest.mark.slow


def kinds_for(cli: Cli, subject_id: str) -> list[str]:
    """The kinds of the fleet events about `subject_id`, oldest first."""
    return [e["kind"] for e in cli.json("events", "list", "--subject", subject_id)]


def make_node(cli: Cli, name: str) -> dict[str, Any]:
    node: dict[str, Any] = cli.json("node", "create", name, "--label", "env=test")
    return node


def test_node_lifecycle_from_create_to_delete(cli: Cli) -> None:
    """A node is created, listed, shown, provisioned, terminated and deleted."""
    node = make_node(cli, "node-a")
    assert node["state"] == "pending"
    assert "node-a" in [n["name"] for n in cli.json("node", "list", "--selector", "env=test")]
    assert cli.json("node", "show", "node-a")["id"] == node["id"]
    assert cli.json("node", "action", "node-a", "provision")["state"] == "provisioning"
    assert cli.json("node", "action", "node-a", "terminate")["state"] == "terminated"
    assert "deleted node node-a" in cli.run("node", "delete", "node-a").stdout
    assert cli.fails("node", "show", "node-a").returncode == 5
    assert kinds_for(cli, node["id"]) == [
        "node.created",
        "node.provision",
        "node.terminate",
        "node.deleted",
    ]


def test_instance_lifecycle_from_create_to_delete(cli: Cli) -> None:
    """An instance is created from --set pairs, filtered by node, driven and deleted."""
    make_node(cli, "node-b")
    inst = cli.json(
        "instance",
        "create",
        "node-b",
        "web",
        "--kind",
        "container",
        "--set",
        "image=nginx:1.27",
        "--set",
        "ports=[80, 443]",
    )
    assert inst["spec"]["image"] == "nginx:1.27"
    assert inst["spec"]["ports"] == [80, 443]
    listed = cli.json("instance", "list", "--node", "node-b", "--kind", "container")
    assert [i["id"] for i in listed] == [inst["id"]]
    assert cli.json("instance", "list", "--node", "node-b", "--state", "running") == []
    assert cli.json("instance", "show", inst["id"])["name"] == "web"

    iid = inst["id"]
    assert cli.json("instance", "action", iid, "provision", "--version", "1")["version"] == 2
    failed = cli.json("instance", "action", iid, "fail", "--reason", "image pull failed")
    assert (failed["state"], failed["failure_reason"]) == ("failed", "image pull failed")
    assert cli.json("instance", "action", iid, "terminate")["state"] == "terminated"
    cli.run("instance", "delete", iid)
    assert kinds_for(cli, iid) == [
        "instance.created",
        "instance.provision",
        "instance.fail",
        "instance.terminate",
        "instance.deleted",
    ]


def test_instance_spec_from_file_and_stdin(cli: Cli, tmp_path: Path) -> None:
    """--spec-file reads a JSON file ('-' for stdin), and --set overrides its fields."""
    make_node(cli, "node-c")
    spec = tmp_path / "vm.json"
    spec.write_text('{"vcpus": 2, "memory_mib": 2048}')
    vm = cli.json(
        "instance",
        "create",
        "node-c",
        "vm1",
        "--kind",
        "vm",
        "--spec-file",
        str(spec),
        "--set",
        "vcpus=4",
    )
    assert (vm["spec"]["vcpus"], vm["spec"]["memory_mib"]) == (4, 2048)
    piped = cli.run(
        "instance",
        "create",
        "node-c",
        "vm2",
        "--kind",
        "vm",
        "--spec-file",
        "-",
        "-o",
        "json",
        stdin='{"disk_gib": 40}',
    )
    assert piped.json()["spec"]["disk_gib"] == 40


def test_bad_spec_json_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    """Malformed --spec, a non-object spec or a missing file exit 2 naming the option."""
    make_node(cli, "node-d")
    base = ("instance", "create", "node-d", "x", "--kind", "vm")
    bad = cli.fails(*base, "--spec", "{vcpus: 2}")
    assert bad.returncode == 2
    assert "--spec is not valid JSON" in bad.stderr
    assert "must be a JSON object" in cli.fails(*base, "--spec", "[2]").stderr
    assert "cannot read" in cli.fails(*base, "--spec-file", str(tmp_path / "nope.json")).stderr
    assert "'vcpus' is not KEY=VALUE" in cli.fails(*base, "--set", "vcpus").stderr
    schema = cli.fails(*base, "--set", "vcpus=0")
    assert "spec.vcpus" in schema.stderr
    assert schema.returncode == 2
    assert cli.json("instance", "list", "--node", "node-d") == []


def test_invalid_transition_names_the_allowed_events(cli: Cli) -> None:
    """An event not allowed from the current state exits 6 and lists the allowed events."""
    node = make_node(cli, "node-e")
    refused = cli.fails("node", "action", node["id"], "drain")
    assert refused.returncode == 6
    assert "allowed: provision, fail, terminate" in refused.stderr


def test_task_lifecycle_from_create_to_delete(cli: Cli) -> None:
    """A shell task is queued with --arg, listed, cancelled and deleted."""
    node = make_node(cli, "node-f")
    task = cli.json(
        "task",
        "create",
        "shell",
        "--node",
        "node-f",
        "--arg",
        "uname",
        "--arg",
        "-a",
        "--max-attempts",
        "2",
    )
    assert task["payload"]["argv"] == ["uname", "-a"]
    assert (task["state"], task["max_attempts"], task["node_id"]) == ("pending", 2, node["id"])
    listed = cli.json("task", "list", "--node", "node-f", "--state", "pending", "--kind", "shell")
    assert [t["id"] for t in listed] == [task["id"]]
    assert cli.json("task", "show", task["id"])["kind"] == "shell"
    assert cli.json("task", "update", task["id"], "--max-attempts", "4")["max_attempts"] == 4
    assert (
        cli.fails("task", "update", task["id"], "--max-attempts", "5", "--version", "1").returncode
        == 6
    )
    unfinished = cli.fails("task", "delete", task["id"])
    assert "cancel it before deleting it" in unfinished.stderr
    cancelled = cli.json("task", "action", task["id"], "cancel", "--reason", "not needed")
    assert cancelled["state"] == "cancelled"
    cli.run("task", "delete", task["id"])
    assert kinds_for(cli, task["id"]) == [
        "task.created",
        "task.updated",
        "task.cancel",
        "task.deleted",
    ]


def test_task_for_an_instance_with_a_json_payload(cli: Cli) -> None:
    """--instance targets an instance; --payload gives the kind's payload as JSON."""
    make_node(cli, "node-g")
    inst = cli.json("instance", "create", "node-g", "db", "--kind", "vm")
    task = cli.json(
        "task", "create", "noop", "--instance", inst["id"], "--payload", '{"message": "ping"}'
    )
    assert (task["instance_id"], task["payload"]["message"]) == (inst["id"], "ping")
    assert [t["id"] for t in cli.json("task", "list", "--instance", inst["id"])] == [task["id"]]


def test_task_target_and_arg_mistakes_are_caught_locally(cli: Cli) -> None:
    """No target, two targets, --arg on a non-shell kind and bad --result JSON are refused."""
    make_node(cli, "node-h")
    assert "exactly one target" in cli.fails("task", "create", "noop").stderr
    assert (
        "--arg is for shell tasks"
        in cli.fails("task", "create", "noop", "--node", "node-h", "--arg", "x").stderr
    )
    task = cli.json("task", "create", "noop", "--node", "node-h")
    bad = cli.fails("task", "action", task["id"], "succeed", "--result", "ok")
    assert "--result is not valid JSON" in bad.stderr


def test_template_create_update_delete(cli: Cli) -> None:
    """update reads the current version and replaces only what is given."""
    created = cli.json(
        "template",
        "create",
        "web-base",
        "--description",
        "web tier",
        "--module",
        "os@1.2",
        "--module",
        "docker@24.0",
    )
    assert created["modules"] == [
        {"name": "os", "version": "1.2"},
        {"name": "docker", "version": "24.0"},
    ]
    assert "os@1.2,docker@24.0" in cli.run("template", "show", "web-base").stdout
    updated = cli.json("template", "update", "web-base", "--module", "os@1.3")
    assert (updated["description"], updated["version"]) == ("web tier", 2)
    assert updated["modules"] == [{"name": "os", "version": "1.3"}]
    assert "web-base" in [t["name"] for t in cli.json("template", "list")]
    assert "NAME@VERSION" in cli.fails("template", "update", "web-base", "--module", "os").stderr
    cli.run("template", "delete", "web-base")
    assert kinds_for(cli, created["id"]) == [
        "template.created",
        "template.updated",
        "template.deleted",
    ]


def test_provider_account_with_catalog(cli: Cli) -> None:
    """An account gets a region, a zone and an instance type, then is deleted."""
    account = cli.json(
        "provider",
        "create",
        "aws-prod",
        "--kind",
        "aws",
        "--setting",
        "default_region=eu-west-1",
        "--setting",
        "spot=true",
        "--credentials-ref",
        "env:AWS_PROFILE_PROD",
    )
    assert account["settings"] == {"default_region": "eu-west-1", "spot": True}
    assert [a["name"] for a in cli.json("provider", "list", "--kind", "aws")] == ["aws-prod"]
    assert cli.json("provider-account", "show", "aws-prod")["id"] == account["id"]

    cli.json("provider", "region", "add", "aws-prod", "eu-west-1", "--display-name", "Ireland")
    cli.json("provider", "zone", "add", "aws-prod", "eu-west-1", "eu-west-1a")
    itype = cli.json(
        "provider",
        "instance-type",
        "add",
        "aws-prod",
        "m7g.large",
        "--vcpus",
        "2",
        "--memory-mib",
        "8192",
        "--arch",
        "arm64",
    )
    assert (itype["vcpus"], itype["memory_mib"], itype["arch"]) == (2, 8192, "arm64")
    regions = cli.json("provider", "region", "list", "aws-prod")
    assert [(r["name"], r["display_name"]) for r in regions] == [("eu-west-1", "Ireland")]
    zones = cli.json("provider", "zone", "list", "aws-prod", "eu-west-1")
    assert [z["name"] for z in zones] == ["eu-west-1a"]
    types = cli.run("provider", "instance-type", "list", "aws-prod").stdout
    assert "m7g.large" in types
    assert "8192" in types

    updated = cli.json(
        "provider", "update", "aws-prod", "--setting", "spot=false", "--unset", "default_region",
        "--credentials-ref", "env:AWS_PROFILE_PROD2",
    )  # fmt: skip
    assert updated["settings"] == {"spot": False}
    assert updated["credentials_ref"] == "env:AWS_PROFILE_PROD2"
    assert cli.fails("provider", "update", "aws-prod").returncode == 2
    shown = cli.json("provider", "region", "show", "aws-prod", "eu-west-1")
    assert (shown["display_name"], shown["version"]) == ("Ireland", 1)
    renamed = cli.json(
        "provider", "region", "update", "aws-prod", "eu-west-1", "--display-name", "Dublin"
    )
    assert (renamed["display_name"], renamed["version"]) == ("Dublin", 2)
    assert (
        cli.json("provider", "zone", "show", "aws-prod", "eu-west-1", "eu-west-1a")["id"]
        == (zones[0]["id"])
    )
    resized = cli.json(
        "provider", "instance-type", "update", "aws-prod", "m7g.large", "--memory-mib", "16384"
    )
    assert (resized["memory_mib"], resized["vcpus"]) == (16384, 2)
    assert cli.json("provider", "instance-type", "show", "aws-prod", "m7g.large")["version"] == 2
    placed = cli.json(
        "node", "create", "placed", "--provider", "aws-prod",
        "--region", "eu-west-1", "--zone", "eu-west-1a",
    )  # fmt: skip
    assert placed["region_id"] == regions[0]["id"]
    assert placed["zone_id"] == zones[0]["id"]
    nowhere = cli.fails(
        "node", "create", "nowhere", "--provider", "aws-prod", "--region", "eu-west-1",
        "--zone", "mars-1a",
    )  # fmt: skip
    assert nowhere.returncode == 5
    assert "zone 'mars-1a' in region 'eu-west-1' does not exist (known: eu-west-1a)" in (
        nowhere.stderr
    )
    assert cli.fails("node", "create", "nowhere", "--zone", "eu-west-1a").returncode == 2
    later = cli.json("node", "list", "--created-after", placed["created_at"])
    assert "placed" in [n["name"] for n in later]
    assert cli.json("node", "list", "--created-before", placed["created_at"]) == [
        n for n in cli.json("node", "list") if n["created_at"] < placed["created_at"]
    ]
    assert cli.json("node", "delete", "placed", "-o", "json") == {
        "deleted": "node",
        "ref": "placed",
    }

    secret = cli.fails("provider", "create", "leaky", "--kind", "aws", "--setting", "api_key=x")
    assert "looks like a secret" in secret.stderr
    cli.run("providers", "delete", "aws-prod")
    assert kinds_for(cli, account["id"]) == [
        "provider_account.created",
        "provider_account.region_added",
        "provider_account.zone_added",
        "provider_account.instance_type_added",
        "provider_account.updated",
        "provider_account.region_updated",
        "provider_account.instance_type_updated",
        "provider_account.deleted",
    ]


def test_events_list_filters_and_table(cli: Cli) -> None:
    """events list filters by kind prefix and subject type; the table shows the key columns."""
    node = make_node(cli, "node-i")
    cli.run("node", "action", "node-i", "provision", "--reason", "rollout")
    events = cli.json("events", "list", "--kind", "node.*", "--subject-type", "node")
    mine = [e for e in events if e["subject_id"] == node["id"]]
    assert [e["kind"] for e in mine] == ["node.created", "node.provision"]
    assert all(e["actor"].endswith(":initial-admin") for e in mine)
    # The oldest events are init's: the `local` provider account, then the first admin token.
    first = [e["kind"] for e in cli.json("events", "list", "--limit", "2")]
    assert first == ["provider_account.created", "token.created"]
    assert cli.json("events", "list", "--kind", "node.*", "--until", "2000-01-01T00:00:00Z") == []

    table = cli.run("event", "list", "--subject", node["id"]).stdout
    for heading in ("OCCURRED AT", "SEVERITY", "KIND", "SUBJECT TYPE", "SUBJECT ID", "ACTOR"):
        assert heading in table
    assert "node.provision" in table
