"""The operator guide documents every lifecycle row the code declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from powernode.fleet.lifecycle import NODE_LIFECYCLE, TASK_LIFECYCLE, StateMachine

GUIDE = Path(__file__).parents[1] / "docs" / "operator-guide.md"


@pytest.mark.parametrize("machine", [NODE_LIFECYCLE, TASK_LIFECYCLE], ids=lambda m: m.subject_type)
def test_the_guide_has_a_row_for_every_event_with_its_sources(
    machine: StateMachine[Any, Any],
) -> None:
    text = GUIDE.read_text()
    for row in machine.transitions:
        lines = [line for line in text.splitlines() if line.startswith(f"| `{row.event}` |")]
        assert lines, f"no row for {row.event}"
        assert any(str(row.source) in line or "every state but" in line for line in lines), (
            f"{machine.subject_type} {row.event} from {row.source} is not documented"
        )
