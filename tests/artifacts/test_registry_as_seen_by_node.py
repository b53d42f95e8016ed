"""An agent pulls from the control plane at the address it reached the node API at."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from powernode.artifacts.assignment import as_seen_by_node
from powernode.settings import Settings


def _task(reference: str) -> dict[str, Any]:
    return {
        "kind": "apply_modules",
        "payload": {"modules": [{"name": "motd", "reference": reference}], "insecure": False},
    }


def test_references_to_this_control_plane_name_the_nodes_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, node_port=8443)
    task = _task("127.0.0.1:8443/modules/motd:1.0")
    seen = as_seen_by_node(task, settings, "10.0.2.100:8443")
    assert seen["payload"]["modules"][0]["reference"] == "10.0.2.100:8443/modules/motd:1.0"
    assert task["payload"]["modules"][0]["reference"] == "127.0.0.1:8443/modules/motd:1.0"


def test_other_registries_other_kinds_and_odd_hosts_are_left_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, node_port=8443)
    elsewhere = _task("registry.example:5000/modules/motd:1.0")
    assert as_seen_by_node(elsewhere, settings, "10.0.2.100:8443") == elsewhere
    shell = {"kind": "shell", "payload": {"argv": ["true"]}}
    assert as_seen_by_node(shell, settings, "10.0.2.100:8443") == shell
    ours = _task("127.0.0.1:8443/modules/motd:1.0")
    assert as_seen_by_node(ours, settings, "evil/host:1") == ours
    assert as_seen_by_node(ours, settings, None) == ours
