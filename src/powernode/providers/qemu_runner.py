"""How the qemu provider runs a VM: a runner interface with three runners, chosen by
`POWERNODE_QEMU_RUNNER` and registered by declaration.

- `real` runs `qemu-system-*` detached (`-daemonize`: QEMU forks, calls setsid and exits once
  the VM is set up, so a bad argument fails the start with QEMU's own message) and finds it
  again through its `-pidfile`; stop asks the guest to power down over the QMP socket in the
  node directory and kills QEMU after a timeout.
- `recorder` runs nothing: it appends each command line to `qemu-argv.jsonl` in the node
  directory (and keeps it in memory), for tests about arguments.
- `disabled` refuses to start VMs, saying how to enable them.

Every VM's files live in its node directory (`VmFiles`); QEMU runs with that directory as its
working directory, so the QMP socket is named relatively there (`qmp.sock`): a unix socket's
absolute path may not exceed 107 bytes, which deep data directories do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from powernode.errors import Invalid, PowernodeError, Unavailable
from powernode.settings import Settings

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT_S = 60.0
KILL_WAIT_S = 10.0
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


class QemuError(PowernodeError):
    """QEMU could not be started or stopped."""

    category = Unavailable.category
    title = "QEMU failed"


@dataclass(frozen=True)
class VmFiles:
    """The files of one VM, all in its node directory."""

    directory: Path

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    qmp_name: ClassVar[str] = "qmp.sock"
    """Relative to `directory` (QEMU's working directory): see the module docstring."""

    @property
    def log(self) -> Path:
        """QEMU's own stderr until it daemonizes (why a start failed)."""
        return self.directory / "qemu.log"

    @property
    def record(self) -> Path:
        """The recorder's command lines, one JSON object a line."""
        return self.directory / "qemu-argv.jsonl"


RUNNERS: dict[str, type[QemuRunner]] = {}


class QemuRunner:
    """Starts, finds and stops the QEMU process of a VM."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RUNNERS[cls.name] = cls

    def check(self) -> None:
        """Raise when this runner cannot start VMs (before anything is prepared for one)."""

    async def launch(self, argv: list[str], vm: VmFiles) -> None:
        """Start the VM `argv` describes; returns once it runs (or raises why not)."""
        raise NotImplementedError

    async def stop(self, vm: VmFiles, timeout_s: float) -> None:
        """Power the VM down gracefully, killing it after `timeout_s`; no-op when not running."""
        raise NotImplementedError

    def pid(self, vm: VmFiles) -> int | None:
        """The VM's QEMU process id while it runs."""
        return None

    def running(self, vm: VmFiles) -> bool:
        return self.pid(vm) is not None


def runner_for(settings: Settings) -> QemuRunner:
    return RUNNERS[settings.qemu_runner]()


def _alive_vm(vm: VmFiles) -> int | None:
    """The pid in `vm.pidfile` if that process is alive and is this VM's QEMU."""
    try:
        pid = int(vm.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if str(vm.pidfile).encode() not in cmdline.split(b"\0"):
        return None  # the pid was reused by another process
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # our own exited child: reap it
            return None
    return pid


class RealRunner(QemuRunner):
    name = "real"

    async def launch(self, argv: list[str], vm: VmFiles) -> None:
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        vm.pidfile.unlink(missing_ok=True)
        with vm.log.open("wb") as errors:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=errors,
                    stderr=errors,
                    cwd=vm.directory,
                    env=env,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise QemuError(
                    f"{argv[0]} is not installed: apt-get install qemu-system-x86 "
                    "(amd64) or qemu-system-arm (arm64)"
                ) from None
            try:
                async with asyncio.timeout(LAUNCH_TIMEOUT_S):
                    code = await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise QemuError(
                    f"QEMU did not finish starting within {LAUNCH_TIMEOUT_S:.0f}s"
                ) from None
        if code != 0:
            detail = vm.log.read_text(errors="replace").strip()[-2000:]
            raise QemuError(f"QEMU exited with status {code}: {detail or 'no message'}")
        if _alive_vm(vm) is None:
            raise QemuError(f"QEMU started but is not running; see {vm.console}")

    def pid(self, vm: VmFiles) -> int | None:
        return _alive_vm(vm)

    async def stop(self, vm: VmFiles, timeout_s: float) -> None:
        pid = _alive_vm(vm)
        if pid is None:
            return
        try:
            await _qmp(vm, "system_powerdown")
        except (OSError, ValueError, TimeoutError) as exc:
            log.warning("VM %s: powerdown over QMP failed (%s); killing it", vm.directory, exc)
            timeout_s = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while _alive_vm(vm) is not None:
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.2)
        else:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = loop.time() + KILL_WAIT_S
        while _alive_vm(vm) is not None:
            if loop.time() > deadline:
                raise QemuError(f"QEMU process {pid} survived SIGKILL for {KILL_WAIT_S:.0f}s")
            await asyncio.sleep(0.1)


async def _qmp(vm: VmFiles, command: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Run one QMP command on the VM's socket (reached through a directory descriptor, so
    the path stays short however deep the node directory is)."""
    fd = os.open(vm.directory, os.O_PATH | os.O_DIRECTORY)
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{fd}/{vm.qmp_name}")
            try:
                json.loads(await reader.readline())  # the greeting
                for execute in ("qmp_capabilities", command):
                    writer.write(json.dumps({"execute": execute}).encode() + b"\n")
                    await writer.drain()
                    while True:  # skip asynchronous events until the reply
                        reply: dict[str, Any] = json.loads(await reader.readline())
                        if "return" in reply or "error" in reply:
                            break
                    if "error" in reply:
                        raise ValueError(f"QMP {execute}: {reply['error']}")
                return reply
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    finally:
        os.close(fd)


class RecorderRunner(QemuRunner):
    """Runs nothing; records each command line. A VM counts as running from its launch to its
    stop, so the lifecycle behaves as with real VMs."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def _record(self, vm: VmFiles, entry: dict[str, Any]) -> None:
        self.calls.append(entry)
        with vm.record.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")

    async def launch(self, argv: list[str], vm: VmFiles) -> None:
        self._record(vm, {"op": "launch", "argv": list(argv)})

    async def stop(self, vm: VmFiles, timeout_s: float) -> None:
        if self.running(vm):
            self._record(vm, {"op": "stop", "timeout_s": timeout_s})

    def running(self, vm: VmFiles) -> bool:
        entries = recorded(vm)
        return bool(entries) and entries[-1]["op"] == "launch"


def recorded(vm: VmFiles) -> list[dict[str, Any]]:
    """What the recorder wrote for this VM, oldest first."""
    try:
        lines = vm.record.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class DisabledRunner(QemuRunner):
    name = "disabled"

    def check(self) -> None:
        raise Invalid(
            "the qemu provider is disabled on this control plane (POWERNODE_QEMU_RUNNER="
            "disabled); set POWERNODE_QEMU_RUNNER=real (needs qemu-system-x86_64 or "
            "qemu-system-aarch64) and restart `powernode serve`"
        )

    async def launch(self, argv: list[str], vm: VmFiles) -> None:
        self.check()

    def pid(self, vm: VmFiles) -> int | None:
        return _alive_vm(vm)

    async def stop(self, vm: VmFiles, timeout_s: float) -> None:
        if _alive_vm(vm) is not None:  # started before the runner was disabled
            self.check()
