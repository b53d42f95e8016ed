"""The local provider: a node is an agent process on the control plane's own machine.

Each node gets `DATA_DIR/nodes/<node id>/` (0700) holding its seed (0600), the agent's state
directory, its log and its pid file. The agent runs detached (its own session, no inherited
descriptors, a minimal environment without the control plane's secrets), so it survives a
control-plane restart exactly like an agent on a real machine would; stop and terminate signal
the recorded process after checking it is still that node's agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from powernode.bootstrap import write_private_file
from powernode.providers.drivers import ProviderDriver

STOP_TIMEOUT_S = 15.0
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


def agent_command() -> list[str]:
    beside = Path(sys.executable).with_name("powernode-agent")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("powernode-agent")
    return [found] if found else [sys.executable, "-m", "powernode.agent.main"]


class LocalDriver(ProviderDriver):
    kind = "local"

    def node_dir(self, node_id: uuid.UUID) -> Path:
        return self.settings.data_dir / "nodes" / str(node_id)

    def _pid(self, node_id: uuid.UUID) -> int | None:
        """The recorded agent pid, if that process is alive and still this node's agent."""
        directory = self.node_dir(node_id)
        try:
            pid = int((directory / "agent.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        state_dir = str(directory / "agent").encode()
        if state_dir not in cmdline.split(b"\0"):
            return None  # the pid was reused by something else
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                os.waitpid(pid, os.WNOHANG)  # our own exited child: reap it
                return None
        return pid

    async def start(self, node_id: uuid.UUID, seed: dict[str, Any]) -> None:
        if self._pid(node_id) is not None:
            return  # already running
        directory = self.node_dir(node_id)
        (directory / "agent").mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        seed_path = directory / "seed.json"
        write_private_file(seed_path, json.dumps(seed, indent=2) + "\n")
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env["HOME"] = str(directory)
        command = [
            *agent_command(),
            "--state-dir",
            str(directory / "agent"),
            "--seed",
            str(seed_path),
        ]
        with (directory / "agent.log").open("ab") as log:
            # Popen, not asyncio: the agent must not be a child the event loop manages.
            proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed argv, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the control plane's restart and signals
                close_fds=True,
                env=env,
                cwd=directory,
            )
        (directory / "agent.pid").write_text(f"{proc.pid}\n")

    async def stop(self, node_id: uuid.UUID) -> None:
        pid = self._pid(node_id)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT_S
        while self._pid(node_id) is not None:
            if loop.time() > deadline:
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.2)
                self._pid(node_id)
                break
            await asyncio.sleep(0.1)

    async def terminate(self, node_id: uuid.UUID) -> None:
        await self.stop(node_id)
        directory = self.node_dir(node_id)
        # Keep the log for the post-mortem; the key and certificate go.
        shutil.rmtree(directory / "agent", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (directory / "seed.json").unlink()

    def status(self, node_id: uuid.UUID) -> dict[str, Any]:
        pid = self._pid(node_id)
        return {
            "agent_pid": pid,
            "agent_running": pid is not None,
            "directory": str(self.node_dir(node_id)),
        }
