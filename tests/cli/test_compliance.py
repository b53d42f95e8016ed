"""`powernode compliance snapshot|verify` end to end: any modification fails verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .harness import Cli

pytestmark = pytest.mark.slow


def test_a_snapshot_verifies_and_any_change_fails(cli: Cli, tmp_path: Path) -> None:
    cli.run("node", "create", "audit-1", "--label", "env=prod")
    out = tmp_path / "snapshot.json"
    cli.run("compliance", "snapshot", "--out", str(out))
    assert out.stat().st_mode & 0o777 in (0o600, 0o644)
    verified = cli.run("compliance", "verify", str(out))
    assert verified.stdout.startswith("valid:")
    scripted = cli.json("compliance", "verify", str(out))
    assert scripted["verified"] is True
    assert scripted["counts"]["nodes"] >= 1

    document = json.loads(out.read_text())
    node = next(n for n in document["snapshot"]["nodes"] if n["name"] == "audit-1")
    node["labels"]["env"] = "dev"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    failure = cli.fails("compliance", "verify", str(tampered))
    assert "signature" in failure.stderr.lower() or "modified" in failure.stderr.lower()

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    cli.fails("compliance", "verify", str(garbage))
