"""Task executors: shell, write_file, drain, reboot/shutdown, noop, and the registry."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from powernode.agent import executors
from powernode.agent.executors import Outcome, PowerSettings, execute
from powernode.agent.executors.shell import OUTPUT_LIMIT
from tests.agent.factories import make_context

REGISTRY = executors.load()


async def run(kind: str, payload: dict[str, Any], **context: Any) -> Outcome:
    return await execute(REGISTRY, kind, payload, make_context(kind=kind, **context))


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _dead(pid)


def _dead(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_every_kind_module_is_registered() -> None:
    """Each executor module registers its kind by declaration, with a summary."""
    assert set(REGISTRY) == {
        "apply_modules",
        "drain",
        "noop",
        "reboot",
        "shell",
        "shutdown",
        "write_file",
    }
    assert all(executor.summary for executor in REGISTRY.values())


async def test_unknown_kind_fails_naming_the_known_ones() -> None:
    """A kind the agent has no executor for fails the task with a clear error."""
    outcome = await run("teleport", {"to": "mars"})
    assert outcome.outcome == "failed"
    assert "unknown task kind 'teleport'" in outcome.result["error"]
    assert "shell" in outcome.result["error"]


async def test_shell_success_reports_output() -> None:
    """A command that exits 0 succeeds with its stdout, stderr and exit code."""
    argv = [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]
    outcome = await run("shell", {"argv": argv, "timeout_s": 30})
    assert outcome.outcome == "succeeded"
    result = outcome.result
    assert (result["exit_code"], result["stdout"], result["stderr"]) == (0, "out\n", "err\n")
    assert result["truncated"] is False
    assert result["timed_out"] is False
    assert result["duration_s"] >= 0


async def test_shell_nonzero_exit_fails_with_the_result() -> None:
    """A non-zero exit fails the task and still reports what the command printed."""
    argv = [sys.executable, "-c", "print('partial'); raise SystemExit(3)"]
    outcome = await run("shell", {"argv": argv, "timeout_s": 30})
    assert outcome.outcome == "failed"
    assert outcome.result["exit_code"] == 3
    assert outcome.result["stdout"] == "partial\n"
    assert "exited with 3" in outcome.result["error"]


async def test_shell_never_runs_a_shell() -> None:
    """argv goes to exec as is: `$(id)` and `;` are printed, not interpreted."""
    outcome = await run("shell", {"argv": ["echo", "$(id)", ";", "rm", "-rf", "/"]})
    assert outcome.outcome == "succeeded"
    assert outcome.result["stdout"] == "$(id) ; rm -rf /\n"


async def test_shell_timeout_kills_the_whole_process_group() -> None:
    """On timeout the command and its children are killed and the task fails."""
    argv = ["sh", "-c", "sleep 60 & echo $!; wait"]
    started = time.monotonic()
    outcome = await run("shell", {"argv": argv, "timeout_s": 1})
    assert time.monotonic() - started < 10
    assert outcome.outcome == "failed"
    assert outcome.result["timed_out"] is True
    assert outcome.result["exit_code"] == -9
    assert "timed out after 1 s" in outcome.result["error"]
    child = int(outcome.result["stdout"].strip())
    assert await asyncio.to_thread(_wait_dead, child), f"grandchild {child} survived"


async def test_shell_output_is_truncated_to_64_kib_each() -> None:
    """Long output keeps its first 64 KiB per stream and says it was truncated."""
    code = "import sys; sys.stdout.write('x' * 200000); sys.stderr.write('y' * 70000)"
    outcome = await run("shell", {"argv": [sys.executable, "-c", code]})
    assert outcome.outcome == "succeeded"
    assert outcome.result["stdout"] == "x" * OUTPUT_LIMIT
    assert outcome.result["stderr"] == "y" * OUTPUT_LIMIT
    assert outcome.result["truncated"] is True


async def test_shell_truncation_inside_a_character_decodes_safely() -> None:
    """A cut through a multi-byte character becomes a replacement character, not an error."""
    code = "import sys; sys.stdout.buffer.write(b'a' + 'é'.encode() * 40000)"
    outcome = await run("shell", {"argv": [sys.executable, "-c", code]})
    stdout = outcome.result["stdout"]
    assert outcome.result["truncated"] is True
    assert stdout.startswith("aé")
    assert stdout.endswith("\ufffd")


async def test_shell_env_is_laid_over_and_cwd_is_used(tmp_path: Path) -> None:
    """`env` adds variables to the agent's environment; `cwd` sets the directory."""
    code = "import os; print(os.environ['POWERNODE_X'], 'PATH' in os.environ, os.getcwd())"
    payload = {"argv": [sys.executable, "-c", code], "env": {"POWERNODE_X": "1"}}
    outcome = await run("shell", {**payload, "cwd": str(tmp_path)})
    assert outcome.result["stdout"] == f"1 True {tmp_path}\n"


async def test_shell_missing_program_fails_clearly() -> None:
    """A program that does not exist fails the task naming it."""
    outcome = await run("shell", {"argv": ["/nonexistent/program"]})
    assert outcome.outcome == "failed"
    assert "cannot run '/nonexistent/program'" in outcome.result["error"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"argv": []}, "argv must be a non-empty list"),
        ({"argv": "ls -l"}, "argv must be a non-empty list"),
        ({"argv": ["ls"], "timeout_s": 0}, "timeout_s must be an integer from 1"),
        ({"argv": ["ls"], "env": {"A": 1}}, "env must be an object of strings"),
        ({"argv": ["ls"], "shell": True}, "unknown field(s) shell"),
    ],
)
async def test_shell_refuses_bad_payloads(payload: dict[str, Any], message: str) -> None:
    """A payload that does not fit the shell kind fails the task and says why."""
    outcome = await run("shell", payload)
    assert outcome.outcome == "failed"
    assert message in outcome.result["error"]


async def test_write_file_writes_atomically_with_the_mode(tmp_path: Path) -> None:
    """The file is replaced by rename (new inode), has the mode, and no temp file remains."""
    target = tmp_path / "conf"
    target.write_text("old")
    old_inode = target.stat().st_ino
    outcome = await run("write_file", {"path": str(target), "content": "new é", "mode": 0o640})
    assert outcome.outcome == "succeeded", outcome.result
    assert target.read_text(encoding="utf-8") == "new é"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != old_inode
    assert os.listdir(tmp_path) == ["conf"]
    assert outcome.result["bytes"] == len("new é".encode())


async def test_write_file_accepts_base64(tmp_path: Path) -> None:
    """content_b64 writes bytes as given."""
    target = tmp_path / "blob"
    data = bytes(range(256))
    payload = {"path": str(target), "content_b64": base64.b64encode(data).decode()}
    outcome = await run("write_file", payload)
    assert outcome.outcome == "succeeded"
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("relative/file", "is not absolute"),
        ("/tmp/../etc/passwd", "contains '..'"),
        ("/", "does not name a file"),
    ],
)
async def test_write_file_refuses_unsafe_paths(path: str, message: str) -> None:
    """Relative paths and paths with '..' are refused before anything is written."""
    outcome = await run("write_file", {"path": path, "content": "x"})
    assert outcome.outcome == "failed"
    assert message in outcome.result["error"]


async def test_write_file_needs_exactly_one_content(tmp_path: Path) -> None:
    """Both content and content_b64 (or neither) is refused."""
    both = {"path": str(tmp_path / "f"), "content": "a", "content_b64": "YQ=="}
    assert "exactly one of" in (await run("write_file", both)).result["error"]
    assert (
        "exactly one of" in (await run("write_file", {"path": str(tmp_path / "f")})).result["error"]
    )
    assert not (tmp_path / "f").exists()


async def test_write_file_into_a_missing_directory_fails(tmp_path: Path) -> None:
    """The parent directory must exist."""
    outcome = await run("write_file", {"path": str(tmp_path / "no" / "f"), "content": "x"})
    assert outcome.outcome == "failed"
    assert "cannot write" in outcome.result["error"]


async def test_drain_sets_the_agent_draining() -> None:
    """drain marks the agent as draining and says so."""
    context = make_context(kind="drain")
    outcome = await execute(REGISTRY, "drain", {}, context)
    assert outcome == Outcome("succeeded", {"draining": True})
    assert context.control.draining


async def test_noop_echoes_its_message() -> None:
    """noop reports its message back."""
    assert await run("noop", {"message": "hi"}) == Outcome("succeeded", {"message": "hi"})
    assert await run("noop", {}) == Outcome("succeeded", {"message": ""})


@pytest.mark.parametrize("kind", ["reboot", "shutdown"])
async def test_power_dry_run_does_nothing(kind: str) -> None:
    """A dry run reports the command it would run and schedules nothing."""
    context = make_context(kind=kind)
    outcome = await execute(REGISTRY, kind, {"dry_run": True}, context)
    assert outcome.outcome == "succeeded"
    assert outcome.result["dry_run"] is True
    assert outcome.result["command"] == ["true"]
    assert context.after_complete == []
    assert not context.control.draining


@pytest.mark.parametrize("kind", ["reboot", "shutdown"])
async def test_power_command_runs_only_after_completion(kind: str, tmp_path: Path) -> None:
    """The power command is an after-completion action; running it drains the agent."""
    marker = tmp_path / "marker"
    command = (sys.executable, "-c", f"open({str(marker)!r}, 'w').write({kind!r})")
    settings = PowerSettings(reboot=command, shutdown=command)
    context = make_context(kind=kind, power=settings)
    outcome = await execute(REGISTRY, kind, {}, context)
    assert outcome.outcome == "succeeded"
    assert not marker.exists()
    assert len(context.after_complete) == 1
    await context.after_complete[0]()
    assert marker.read_text() == kind
    assert context.control.draining


async def test_a_crashing_executor_fails_the_task() -> None:
    """An executor's unexpected exception becomes a failed outcome, not an agent crash."""

    async def broken(payload: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    registry = {"broken": executors.Executor("broken", "crashes", broken)}
    outcome = await execute(registry, "broken", {}, make_context())
    assert outcome.outcome == "failed"
    assert "RuntimeError: boom" in outcome.result["error"]
