"""The init (PID 1) of powernode node images, and its `reboot` / `poweroff` commands.

Booted from the initramfs (the whole node in RAM) or from a disk (Debian's initrd mounts the
root and runs /sbin/init, which is this): mount the kernel filesystems, load the drivers a VM or
a server needs, bring up networking by DHCP, mount the state disk (label `pn-state`) at
/var/lib/powernode so the node keeps its identity and modules across reboots, then run the
agent, restarting it if it exits, and reap orphans. SIGTERM powers off, SIGINT (Ctrl-Alt-Del)
and SIGUSR1 reboot: `python3 -m powernode.agent.boot reboot|poweroff` sends them.

Every step logs to the console, so a node that does not come up says why in its serial log.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
VENDORED = "/usr/lib/powernode/python"
STATE_LABEL = "pn-state"
STATE_DIR = Path("/var/lib/powernode")
AGENT_LOG = Path("/var/log/powernode-agent.log")
DRIVERS = (
    "virtio_pci",
    "virtio_mmio",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "virtio_rng",
    "virtio_console",
    "qemu_fw_cfg",
    "e1000",
    "e1000e",
    "crc32c_generic",  # ext4 needs a crc32c implementation (a soft dependency)
    "crc32c_intel",
    "ext4",
    "overlay",
    "erofs",
    "loop",
    "evdev",  # the power button, below: how a hypervisor asks for a clean shutdown
    "button",
    "gpio_keys",
    "gpio_pl061",
)
"""Modules worth loading on any machine we boot; missing ones (built in, or not shipped in this
image) are skipped."""
MOUNTS = (
    ("proc", "/proc", "proc", "nosuid,nodev,noexec"),
    ("sysfs", "/sys", "sysfs", "nosuid,nodev,noexec"),
    ("devtmpfs", "/dev", "devtmpfs", "nosuid,mode=0755"),
    ("devpts", "/dev/pts", "devpts", "nosuid,noexec,gid=5,mode=0620"),
    ("tmpfs", "/run", "tmpfs", "nosuid,nodev,mode=0755"),
    ("tmpfs", "/tmp", "tmpfs", "nosuid,nodev,mode=1777"),  # noqa: S108 - mounting it
)
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)

_RB_AUTOBOOT = 0x01234567
_RB_POWER_OFF = 0x4321FEDC
_shutdown: int | None = None


def say(message: str) -> None:
    line = f"powernode-init: {message}\n"
    try:
        with open("/dev/console", "w") as console:
            console.write(line)
    except OSError:
        sys.stderr.write(line)


def run(*argv: str, timeout: float = 60.0) -> int:
    try:
        return subprocess.run(argv, timeout=timeout, check=False).returncode  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"{argv[0]}: {exc}")
        return -1


def mounted() -> set[str]:
    try:
        return {line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()}
    except OSError:
        return set()


def mount_kernel_filesystems() -> None:
    for source, target, fstype, options in MOUNTS:
        if target in mounted():
            continue
        Path(target).mkdir(parents=True, exist_ok=True)
        run("mount", "-t", fstype, "-o", options, source, target)
    say("kernel filesystems mounted")
    # A disk root comes read-only from the initrd; the command line says `rw` when it may write.
    run("mount", "-o", "remount,rw", "/")


def load_drivers() -> None:
    for module in DRIVERS:
        subprocess.run(  # noqa: S603
            ["modprobe", "-q", module],  # noqa: S607
            check=False,
            stderr=subprocess.DEVNULL,
        )


def start_network() -> None:
    with contextlib.suppress(OSError):
        hostname = Path("/etc/hostname").read_text().strip() or "powernode"
        Path("/proc/sys/kernel/hostname").write_text(hostname)
    run("ip", "link", "set", "lo", "up")
    for iface in sorted(p.name for p in Path("/sys/class/net").iterdir()):
        if iface == "lo":
            continue
        run("ip", "link", "set", iface, "up")
        # -n: give up if no lease (a machine without DHCP still runs), -q: exit once bound.
        if run("udhcpc", "-i", iface, "-n", "-q", "-t", "10", "-T", "1", timeout=30) == 0:
            say(f"network: {iface} configured by DHCP")
            return
    say("network: no interface got a DHCP lease")


def mount_state_disk() -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    found = subprocess.run(  # noqa: S603
        ["findfs", f"LABEL={STATE_LABEL}"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    device = found.stdout.strip()
    if found.returncode != 0 or not device:
        say(f"state: no disk labelled {STATE_LABEL}; keeping state in memory")
        return
    if run("mount", "-t", "ext4", "-o", "nosuid,nodev", device, str(STATE_DIR)) == 0:
        say(f"state: {device} ({STATE_LABEL}) mounted at {STATE_DIR}")
    else:
        say(f"state: cannot mount {device}; keeping state in memory")


def agent_argv() -> list[str]:
    me = f"{sys.executable} -m powernode.agent.boot"
    return [
        sys.executable,
        "-m",
        "powernode.agent.main",
        "--state-dir",
        str(STATE_DIR / "agent"),
        "--reboot-command",
        f"{me} reboot",
        "--shutdown-command",
        f"{me} poweroff",
    ]


KEY_POWER = 116
_EV_KEY = 1
_INPUT_EVENT = struct.Struct("llHHi")


def watch_power_button() -> None:
    """Power off when a power key is pressed (ACPI on amd64, gpio-keys on arm64): what QEMU's
    `system_powerdown` and a server's button send. Runs in a daemon thread; input devices that
    appear later (drivers load asynchronously) are picked up on the next scan."""
    handles: dict[str, int] = {}
    while _shutdown is None:
        for device in glob.glob("/dev/input/event*"):
            if device not in handles:
                with contextlib.suppress(OSError):
                    handles[device] = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
        readable, _, _ = select.select(list(handles.values()), [], [], 2.0)
        for fd in readable:
            try:
                data = os.read(fd, _INPUT_EVENT.size * 64)
            except OSError:
                continue
            for offset in range(0, len(data) - _INPUT_EVENT.size + 1, _INPUT_EVENT.size):
                _, _, kind, code, value = _INPUT_EVENT.unpack_from(data, offset)
                if kind == _EV_KEY and code == KEY_POWER and value == 1:
                    say("power button pressed")
                    _on_signal(signal.SIGTERM, None)


def _on_signal(signum: int, _frame: object) -> None:
    global _shutdown
    _shutdown = signum


def reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def supervise() -> int:
    """Run the agent until a shutdown signal; returns that signal."""
    restarts = 0
    AGENT_LOG.parent.mkdir(parents=True, exist_ok=True)
    while _shutdown is None:
        say("starting the agent")
        with AGENT_LOG.open("ab") as log:
            agent = subprocess.Popen(  # noqa: S603
                agent_argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    "PATH": SYSTEM_PATH,
                    "LANG": "C.UTF-8",
                    "HOME": "/root",
                    "PYTHONPATH": VENDORED,  # the agent's libraries, ahead of Debian's
                },
            )
        started = time.monotonic()
        while _shutdown is None and agent.poll() is None:
            time.sleep(0.5)
            reap()
        if agent.poll() is None:
            agent.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=10)
            break
        if time.monotonic() - started > 60:
            restarts = 0
        delay = RESTART_DELAYS[min(restarts, len(RESTART_DELAYS) - 1)]
        restarts += 1
        say(f"agent exited with {agent.returncode}; restarting in {delay:.0f} s")
        deadline = time.monotonic() + delay
        while _shutdown is None and time.monotonic() < deadline:
            time.sleep(0.2)
            reap()
    assert _shutdown is not None
    return _shutdown


def power_off(signum: int) -> None:
    say("rebooting" if signum in (signal.SIGINT, signal.SIGUSR1) else "powering off")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(-1, signal.SIGTERM)
    time.sleep(1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(-1, signal.SIGKILL)
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    reboot_cmd = _RB_AUTOBOOT if signum in (signal.SIGINT, signal.SIGUSR1) else _RB_POWER_OFF
    libc.reboot(reboot_cmd)
    say(f"reboot(2) failed: errno {ctypes.get_errno()}")


def step(name: str, action: Callable[[], None]) -> None:
    """Run one boot step; PID 1 must survive a failing one (the kernel panics if it exits)."""
    try:
        action()
    except Exception as exc:
        say(f"{name} failed: {type(exc).__name__}: {exc}")


def init() -> None:
    # The kernel starts /init with HOME and TERM only.
    os.environ["PATH"] = SYSTEM_PATH
    for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(handled, _on_signal)
    # Ctrl-Alt-Del sends SIGINT to PID 1 instead of an immediate reboot.
    with contextlib.suppress(OSError):
        ctypes.CDLL(None).reboot(0)  # LINUX_REBOOT_CMD_CAD_OFF
    step("mounting kernel filesystems", mount_kernel_filesystems)
    step("loading drivers", load_drivers)
    threading.Thread(target=watch_power_button, name="power-button", daemon=True).start()
    step("network", start_network)
    step("state disk", mount_state_disk)
    signum: int = signal.SIGTERM
    try:
        signum = supervise()
    except Exception as exc:
        say(f"supervisor failed: {type(exc).__name__}: {exc}")
    power_off(signum)
    while True:  # PID 1 must not exit
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args and os.getpid() == 1:
        init()
        return 0
    if args == ["reboot"]:
        os.kill(1, signal.SIGUSR1)
        return 0
    if args == ["poweroff"]:
        os.kill(1, signal.SIGTERM)
        return 0
    sys.stderr.write(
        "usage: python3 -m powernode.agent.boot [reboot|poweroff] (init runs as PID 1)\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
