"""Factories with keyword overrides for agent tests."""

from __future__ import annotations

from typing import Any

from powernode.agent.executors import AgentControl, PowerSettings, TaskContext


def make_context(**overrides: Any) -> TaskContext:
    """A TaskContext for a made-up task; any field can be overridden."""
    fields: dict[str, Any] = {
        "task_id": "00000000-0000-0000-0000-000000000001",
        "kind": "shell",
        "attempt": 1,
        "control": AgentControl(),
        "power": PowerSettings(reboot=("true",), shutdown=("true",)),
    }
    fields.update(overrides)
    return TaskContext(**fields)
