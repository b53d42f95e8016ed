"""End to end, for real: a template becomes boot artifacts (mmdebstrap, our initramfs, the disk
image), a QEMU VM under TCG boots them, its agent reads the seed from fw_cfg, enrolls over mTLS
through the restricted user network, heartbeats and runs tasks; `apply_modules` activates a
signed module with fs-verity enabled by the guest kernel. Then the raw disk image boots under
UEFI (OVMF) the same way, and the arm64 artifacts are built and checked with real tools.

The rootfs stage is cached in POWERNODE_TEST_IMAGE_CACHE (default ~/.cache/powernode-tests): the
first run on a machine downloads and installs Debian packages (several minutes, longer for arm64
under qemu-user emulation); later runs reuse it, as a real build would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from powernode.testing import POWERNODE, RunningServer, running_server
from tests.agent.test_against_control_plane import FAST, api, task, wait_until
from tests.agent.test_apply_from_control_plane import sign_and_trust
from tests.images.test_build import _cpio_names

CACHE = Path(
    os.environ.get("POWERNODE_TEST_IMAGE_CACHE")
    or Path.home() / ".cache" / "powernode-tests" / "images"
)
VM_ENV = {
    **FAST,
    "POWERNODE_HEARTBEAT_INTERVAL_S": "2",
    "POWERNODE_IMAGE_CACHE_DIR": str(CACHE),
    "POWERNODE_QEMU_RUNNER": "real",
}
BOOT_TIMEOUT_S = 240

pytestmark = pytest.mark.skipif(
    os.environ.get("POWERNODE_SKIP_VM_TESTS") == "1", reason="POWERNODE_SKIP_VM_TESTS=1"
)


def cli(server: RunningServer, *args: str, timeout: float = 1800) -> str:
    done = subprocess.run(
        [POWERNODE, *args],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"powernode {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("vm")
    with running_server(root / "cp", env=VM_ENV) as running:
        module = root / "motd"
        (module / "etc").mkdir(parents=True)
        (module / "etc" / "motd").write_text("composed by powernode\n")
        (module / "module.toml").write_text('name = "motd"\nversion = "1.0"\n')
        cli(running, "module", "import", str(module))
        cli(running, "template", "create", "edge", "--module", "motd@1.0")
        try:
            yield running
        finally:
            # No VM outlives the tests, whatever happened.
            subprocess.run(["pkill", "-f", f"qemu-system.*{running.data_dir}"], check=False)


def _node(server: RunningServer, name: str) -> dict[str, Any]:
    with api(server) as http:
        response = http.get(f"/nodes/{name}")
        response.raise_for_status()
        node: dict[str, Any] = response.json()
        return node


def _console(server: RunningServer, name: str) -> str:
    with api(server) as http:
        return http.get(f"/nodes/{name}/console").text


def _wait_running(server: RunningServer, name: str) -> None:
    def running() -> bool:
        node = _node(server, name)
        if node["state"] == "failed":
            raise AssertionError(f"{name} failed: {node.get('failure_reason')}")
        return bool(node["state"] == "running")

    try:
        wait_until(running, BOOT_TIMEOUT_S, f"{name} to enroll and run")
    except AssertionError:
        print(_console(server, name)[-6000:])  # the guest's story, on failure
        raise


def _run_task(server: RunningServer, body: dict[str, Any], within_s: float) -> dict[str, Any]:
    with api(server) as http:
        created = http.post("/tasks", json=body)
        assert created.status_code == 201, created.text
    done: dict[str, Any] = wait_until(
        lambda: (
            (t := task(server, created.json()["id"]))["state"] in ("succeeded", "failed", "expired")
            and t
        ),
        within_s,
        f"{body['kind']} to finish",
    )
    return done


def _terminate(server: RunningServer, name: str) -> None:
    cli(server, "node", "action", name, "terminate")
    wait_until(lambda: _node(server, name)["state"] == "terminated", 60, f"{name} to terminate")


def test_initramfs_boots_under_tcg_enrolls_runs_tasks_and_activates_with_fsverity(
    server: RunningServer, tmp_path: Path
) -> None:
    out = cli(
        server,
        "image",
        "build",
        "edge",
        "--arch",
        "amd64",
        "--format",
        "initramfs,disk",
        "--out",
        str(tmp_path / "img"),
    )
    assert "initramfs" in out
    assert "registered 2 artifact(s)" in out
    listed = json.loads(cli(server, "image", "list", "--template", "edge", "--output", "json"))
    assert {a["format"] for a in listed} == {"initramfs", "disk"}
    initramfs = tmp_path / "img" / "initramfs" / "initramfs.img"
    listing = _cpio_names(initramfs)
    assert {"init", "etc/motd", "usr/sbin/powernode-init"} <= set(listing)
    assert not any(name.startswith("etc/powernode/seed") for name in listing)

    cli(server, "node", "create", "vm1", "--provider", "qemu", "--template", "edge")
    _wait_running(server, "vm1")
    console = _console(server, "vm1")
    assert "powernode-init: starting the agent" in console
    assert "(pn-state) mounted at /var/lib/powernode" in console  # identity survives reboots

    shell = _run_task(
        server,
        {"kind": "shell", "node": "vm1", "payload": {"argv": ["uname", "-m"], "timeout_s": 60}},
        120,
    )
    assert shell["state"] == "succeeded", shell
    assert shell["result"]["stdout"].strip() == "x86_64"

    digest = sign_and_trust(server)
    applied = _run_task(
        server,
        {
            "kind": "apply_modules",
            "node": "vm1",
            "payload": {"modules": [{"name": "motd", "version": "1.0"}]},
        },
        240,
    )
    assert applied["state"] == "succeeded", json.dumps(applied)[-3000:]
    assert applied["result"]["active"] == {"motd": digest}
    assert applied["result"]["verity"] == "enabled"  # the guest kernel has fs-verity
    assert applied["result"]["mode"] == "overlay"
    assert applied["result"]["lowers"] == "erofs"  # mkfs.erofs images, loop-mounted
    wait_until(
        lambda: _node(server, "vm1")["module_drift"] == "in_sync", 60, "vm1 to report its modules"
    )
    _terminate(server, "vm1")
    # QEMU's system_powerdown reached the init as a power button press: a clean shutdown.
    assert "powernode-init: power button pressed" in _console(server, "vm1")


def test_the_disk_image_boots_under_uefi_and_enrolls(server: RunningServer) -> None:
    if not any((server.data_dir / "content").rglob("*")):
        pytest.skip("needs the artifacts the previous test registered")
    cli(server, "provider", "create", "qemu-disk", "--kind", "qemu", "--setting", "boot=disk")
    cli(server, "node", "create", "vm2", "--provider", "qemu-disk", "--template", "edge")
    _wait_running(server, "vm2")
    console = _console(server, "vm2")
    assert "Welcome to GRUB" in console  # OVMF ran the ESP's boot loader
    assert "powernode-loader: root LABEL=pn-root is /dev/vda2" in console
    assert "(pn-state) mounted at /var/lib/powernode" in console
    _terminate(server, "vm2")


def test_arm64_artifacts_are_built_and_have_the_right_structure(
    server: RunningServer, tmp_path: Path
) -> None:
    out_dir = tmp_path / "arm64"
    cli(
        server,
        "image",
        "build",
        "edge",
        "--arch",
        "arm64",
        "--out",
        str(out_dir),
        timeout=3600,
    )
    build = json.loads((out_dir / "build.json").read_text())
    assert {a["format"] for a in build["artifacts"]} == {
        "initramfs",
        "disk",
        "iso",
        "ipxe",
        "qcow2",
        "bootc",
    }
    kernel = (out_dir / "initramfs" / "vmlinuz").read_bytes()
    assert kernel[0x38:0x3C] == b"ARM\x64"  # the arm64 Image header's magic
    table = json.loads(
        subprocess.run(
            ["sfdisk", "-J", str(out_dir / "disk" / "disk.raw")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["partitiontable"]
    assert table["label"] == "gpt"
    assert len(table["partitions"]) == 2
    toc = subprocess.run(
        ["xorriso", "-indev", str(out_dir / "iso" / "node.iso"), "-toc"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "El Torito" in toc.stdout + toc.stderr
    subprocess.run(
        ["qemu-img", "check", str(out_dir / "qcow2" / "disk.qcow2")],
        check=True,
        capture_output=True,
    )
    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci:{out_dir / 'bootc' / 'bootc'}:latest"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert config["architecture"] == "arm64"
    assert config["config"]["Labels"]["containers.bootc"] == "1"


def test_the_arm64_initramfs_boots_under_tcg_and_runs_a_task(server: RunningServer) -> None:
    """qemu-system-aarch64 emulating a Cortex-class CPU on this amd64 machine: slower than the
    amd64 guest, still within the boot timeout."""
    listed = json.loads(
        cli(server, "image", "list", "--template", "edge", "--arch", "arm64", "--output", "json")
    )
    if not any(a["format"] == "initramfs" for a in listed):
        pytest.skip("needs the arm64 artifacts the previous test built")
    cli(
        server,
        "node",
        "create",
        "vm3",
        "--provider",
        "qemu",
        "--template",
        "edge",
        "--arch",
        "arm64",
    )
    _wait_running(server, "vm3")
    shell = _run_task(
        server,
        {"kind": "shell", "node": "vm3", "payload": {"argv": ["uname", "-m"], "timeout_s": 60}},
        180,
    )
    assert shell["state"] == "succeeded", shell
    assert shell["result"]["stdout"].strip() == "aarch64"
    _terminate(server, "vm3")
