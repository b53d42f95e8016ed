"""`powernode events tail [-f]` and `events chain`, as an operator watches the log."""

from __future__ import annotations

import json
import select
import subprocess

import pytest

from powernode.testing import POWERNODE

from .harness import Cli

pytestmark = pytest.mark.slow


def test_tail_prints_the_newest_events_oldest_first(cli: Cli) -> None:
    for i in range(3):
        cli.run("node", "create", f"tail-{i}")
    result = cli.run("events", "tail", "-n", "2", "--kind", "node.created", "-o", "json")
    names = [json.loads(line)["payload"]["name"] for line in result.stdout.splitlines()]
    assert names == ["tail-1", "tail-2"]
    chain_id = json.loads(result.stdout.splitlines()[-1])["correlation_id"]
    chain = cli.json("events", "chain", chain_id)
    assert [e["kind"] for e in chain] == ["node.created"]


def test_tail_follow_prints_events_as_they_are_recorded(cli: Cli) -> None:
    cli.run("node", "create", "before-follow")
    argv = [
        POWERNODE,
        "events",
        "tail",
        "-n",
        "1",
        "-f",
        "--interval",
        "0.2",
        "--kind",
        "node.created",
        "-o",
        "json",
    ]
    with subprocess.Popen(
        argv, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as follower:
        try:
            stdout = follower.stdout
            assert stdout is not None

            def next_event() -> dict[str, object]:
                ready, _, _ = select.select([stdout], [], [], 20)
                assert ready, "no event printed within 20 s"
                event: dict[str, object] = json.loads(stdout.readline())
                return event

            assert next_event()["payload"] == {
                "name": "before-follow",
                "arch": "amd64",
                "labels": {},
            }
            cli.run("node", "create", "during-follow")
            assert next_event()["payload"] == {
                "name": "during-follow",
                "arch": "amd64",
                "labels": {},
            }
        finally:
            follower.terminate()
