"""The qemu provider's command lines, recorded by the recorder runner: exact argv for amd64 and
arm64, initramfs and disk boots, the accelerator choice, the seed by fw_cfg and the restricted
network; the files it prepares (seed, state disk, overlay, UEFI variables)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from powernode.images.spec import ARCHES
from powernode.providers.qemu import kvm_usable, qemu_option
from powernode.providers.qemu_artifacts import latest_artifact
from powernode.providers.qemu_runner import VmFiles, recorded
from tests.providers.conftest import QemuApi
from tests.providers.factories import INITRAMFS_FILES, register_artifact

SOCAT = shutil.which("socat")
pytestmark = pytest.mark.skipif(SOCAT is None, reason="socat is not installed")


async def qemu_node(
    q: QemuApi,
    name: str = "vm-1",
    *,
    arch: str = "amd64",
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A node created on a qemu account with `settings` (the recorder "starts" it)."""
    account = q.account_id
    if settings is not None:
        created = await q.api.ok(
            "POST",
            "/provider-accounts",
            json={"name": f"qemu-{name}", "kind": "qemu", "settings": settings},
        )
        account = created["id"]
    body = {"name": name, "arch": arch, "template_id": q.template_id}
    node: dict[str, Any] = await q.api.ok(
        "POST", "/nodes", json={**body, "provider_account_id": account}
    )
    return node


def launches(q: QemuApi, node: dict[str, Any]) -> list[list[str]]:
    vm = VmFiles(q.data_dir / "nodes" / node["id"])
    return [entry["argv"] for entry in recorded(vm) if entry["op"] == "launch"]


def common_tail(directory: Path, port: int = 8443) -> list[str]:
    """Everything after the machine, cpu, memory and vcpus, up to the drives."""
    return [
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        f"file,id=serial0,path={directory}/console.log,append=on",
        "-serial",
        "chardev:serial0",
        "-fw_cfg",
        f"name=opt/powernode/seed,file={directory}/seed.json",
        "-netdev",
        f"user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:{port}-cmd:{SOCAT} - "
        f"TCP:127.0.0.1:{port}",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
    ]


def control_tail(directory: Path) -> list[str]:
    pidfile = f"{directory}/qemu.pid"
    return ["-qmp", "unix:qmp.sock,server=on,wait=off", "-pidfile", pidfile, "-daemonize"]


def run(*argv: str | Path) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


async def test_an_amd64_initramfs_node_boots_its_kernel_under_tcg_with_this_exact_argv(
    qemu_api: QemuApi,
) -> None:
    artifact = await register_artifact(
        qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id)
    )
    node = await qemu_node(qemu_api)
    assert node["state"] == "provisioning"
    assert node["failure_reason"] is None
    directory = qemu_api.data_dir / "nodes" / node["id"]
    store = qemu_api.data_dir / "content" / "blobs"
    kernel, initrd = (store / f["sha256"][:2] / f["sha256"] for f in artifact.files)
    accel = "kvm" if kvm_usable("amd64") else "tcg"
    assert launches(qemu_api, node) == [
        [
            "qemu-system-x86_64",
            "-name",
            f"powernode-{node['id']}",
            "-machine",
            "q35",
            "-accel",
            accel,
            *(["-cpu", "host"] if accel == "kvm" else []),
            "-m",
            "1024",
            "-smp",
            "1",
            *common_tail(directory),
            "-drive",
            f"if=virtio,format=raw,file={directory}/state.img",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            "console=ttyS0 quiet",
            *control_tail(directory),
        ]
    ]
    status = qemu_api.api.app.state.providers.status("qemu", uuid.UUID(node["id"]))
    assert status["running"] is True
    assert (status["accel"], status["boot"]) == (accel, "initramfs")
    assert status["console"] == f"{directory}/console.log"


def test_these_machines_run_guests_under_tcg() -> None:
    """No vmx/svm here (a /dev/kvm may exist but cannot run guests): TCG; never KVM for a
    guest of another architecture or without the device."""
    assert kvm_usable("arm64") is False  # an amd64 host
    assert kvm_usable("amd64", Path("/nonexistent/kvm")) is False
    flags = Path("/proc/cpuinfo").read_text().split()
    if "vmx" not in flags and "svm" not in flags:
        assert kvm_usable("amd64") is False


async def test_an_arm64_initramfs_node_uses_the_virt_machine_with_cpu_max_under_tcg(
    qemu_api: QemuApi,
) -> None:
    await register_artifact(
        qemu_api.api.db,
        qemu_api.data_dir,
        uuid.UUID(qemu_api.template_id),
        arch="arm64",
        details={"cmdline": "console=ttyAMA0"},
    )
    node = await qemu_node(qemu_api, arch="arm64", settings={"memory_mib": 2048, "cpus": 2})
    directory = qemu_api.data_dir / "nodes" / node["id"]
    (argv,) = launches(qemu_api, node)
    assert argv[:13] == [
        "qemu-system-aarch64",
        "-name",
        f"powernode-{node['id']}",
        "-machine",
        "virt",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-m",
        "2048",
        "-smp",
        "2",
    ]
    tail = common_tail(directory)
    assert argv[13 : 13 + len(tail)] == tail
    assert argv[argv.index("-append") + 1] == "console=ttyAMA0"


@pytest.mark.parametrize(
    ("arch", "cpu"), [("amd64", ["-cpu", "host"]), ("arm64", ["-cpu", "host"])]
)
async def test_forcing_kvm_uses_the_host_cpu(qemu_api: QemuApi, arch: str, cpu: list[str]) -> None:
    await register_artifact(
        qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id), arch=arch
    )
    node = await qemu_node(qemu_api, arch=arch, settings={"accel": "kvm"})
    (argv,) = launches(qemu_api, node)
    assert argv[5:9] == ["-accel", "kvm", *cpu]


@pytest.mark.parametrize(("arch", "fmt"), [("amd64", "disk"), ("arm64", "qcow2")])
async def test_a_disk_boot_uses_uefi_pflash_and_a_qcow2_overlay_of_the_registered_image(
    qemu_api: QemuApi, arch: str, fmt: str
) -> None:
    image = qemu_api.data_dir / "image"
    name = "disk.raw" if fmt == "disk" else "disk.qcow2"
    await asyncio.to_thread(
        run, "qemu-img", "create", "-q", "-f", "raw" if fmt == "disk" else "qcow2", image, "64M"
    )
    artifact = await register_artifact(
        qemu_api.api.db,
        qemu_api.data_dir,
        uuid.UUID(qemu_api.template_id),
        arch=arch,
        fmt=fmt,
        files={name: image.read_bytes()},
        details={},
    )
    node = await qemu_node(qemu_api, arch=arch, settings={"boot": "disk"})
    assert node["failure_reason"] is None
    directory = qemu_api.data_dir / "nodes" / node["id"]
    info = ARCHES[arch]
    code = next(p for p in info.firmware_code if p.exists())
    template = next(p for p in info.firmware_vars if p.exists())
    (argv,) = launches(qemu_api, node)
    drives_at = argv.index("-drive")
    assert argv[drives_at:] == [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={directory}/efi-vars.fd",
        "-drive",
        f"if=virtio,format=qcow2,file={directory}/disk.qcow2",
        "-drive",
        f"if=virtio,format=raw,file={directory}/state.img",
        *control_tail(directory),
    ]
    assert "-kernel" not in argv
    assert (directory / "efi-vars.fd").read_bytes() == template.read_bytes()
    overlay = json.loads(
        await asyncio.to_thread(
            run, "qemu-img", "info", "--output", "json", directory / "disk.qcow2"
        )
    )
    digest = json.loads((directory / "vm.json").read_text())["artifact"]
    assert digest  # the artifact the overlay was made from is remembered
    assert overlay["format"] == "qcow2"
    assert overlay["backing-filename-format"] == ("raw" if fmt == "disk" else "qcow2")
    sha = artifact.files[0]["sha256"]
    assert overlay["backing-filename"] == f"{qemu_api.data_dir}/content/blobs/{sha[:2]}/{sha}"


async def test_the_seed_goes_by_fw_cfg_in_a_0600_file_naming_the_guest_address(
    qemu_api: QemuApi,
) -> None:
    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    node = await qemu_node(qemu_api)
    directory = qemu_api.data_dir / "nodes" / node["id"]
    seed_path = directory / "seed.json"
    assert seed_path.stat().st_mode & 0o777 == 0o600
    assert directory.stat().st_mode & 0o777 == 0o700
    seed = json.loads(seed_path.read_text())
    assert seed["urls"] == ["https://10.0.2.100:8443"]
    assert seed["node_id"] == node["id"]
    assert seed["token"]
    assert seed["ca"].startswith("-----BEGIN CERTIFICATE-----")
    (argv,) = launches(qemu_api, node)
    assert argv[argv.index("-fw_cfg") + 1] == f"name=opt/powernode/seed,file={seed_path}"
    assert str(seed_path) not in " ".join(argv[: argv.index("-fw_cfg")])


async def test_the_guest_network_is_restricted_and_reaches_only_the_node_api(
    qemu_api: QemuApi,
) -> None:
    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    node = await qemu_node(qemu_api)
    (argv,) = launches(qemu_api, node)
    netdevs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-netdev"]
    assert len(netdevs) == 1
    options = netdevs[0].split(",")
    assert options[:3] == ["user", "id=net0", "restrict=on"]
    (forward,) = [o for o in options if o.startswith("guestfwd=")]
    # The cmd: form (a connector per connection), never tcp: (one connection per QEMU run).
    assert forward == f"guestfwd=tcp:10.0.2.100:8443-cmd:{SOCAT} - TCP:127.0.0.1:8443"
    assert not any(o.startswith(("hostfwd=", "smb=", "tftp=")) for o in options)


def test_commas_in_option_values_are_doubled() -> None:
    assert qemu_option("/srv/a,b/seed.json") == "/srv/a,,b/seed.json"


async def test_the_state_disk_is_sparse_ext4_labelled_pn_state_with_fs_verity(
    qemu_api: QemuApi,
) -> None:
    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    node = await qemu_node(qemu_api)
    disk = qemu_api.data_dir / "nodes" / node["id"] / "state.img"
    assert disk.stat().st_size == 1 << 30
    assert disk.stat().st_blocks * 512 < 64 << 20  # sparse
    header = await asyncio.to_thread(run, "dumpe2fs", "-h", disk)
    assert "Filesystem volume name:   pn-state" in header
    features = next(line for line in header.splitlines() if line.startswith("Filesystem features"))
    assert "verity" in features.split()


async def test_the_newest_artifact_of_the_template_arch_and_format_is_booted(
    qemu_api: QemuApi,
) -> None:
    import datetime as dt

    template = uuid.UUID(qemu_api.template_id)
    old = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    await register_artifact(
        qemu_api.api.db,
        qemu_api.data_dir,
        template,
        files={"vmlinuz": b"old", "initramfs.img": b"1"},
        created_at=old,
    )
    newest = await register_artifact(
        qemu_api.api.db, qemu_api.data_dir, template, created_at=old + dt.timedelta(days=1)
    )
    await register_artifact(  # another arch and another format do not count
        qemu_api.api.db,
        qemu_api.data_dir,
        template,
        arch="arm64",
        created_at=old + dt.timedelta(days=2),
    )
    async with qemu_api.api.db.read_sessions() as session:
        found = await latest_artifact(session, qemu_api.settings, template, "amd64", "initramfs")
        assert found.id == newest.id
        assert found.file("vmlinuz").read_bytes() == INITRAMFS_FILES["vmlinuz"]
        assert found.details == {"cmdline": "console=ttyS0 quiet"}


async def test_account_settings_that_make_no_sense_fail_the_node_saying_which(
    qemu_api: QemuApi,
) -> None:
    await register_artifact(qemu_api.api.db, qemu_api.data_dir, uuid.UUID(qemu_api.template_id))
    node = await qemu_node(qemu_api, settings={"boot": "floppy", "memory_mib": 1})
    assert node["state"] == "failed"
    assert "invalid settings" in node["failure_reason"]
    assert "boot" in node["failure_reason"]
    assert "memory_mib" in node["failure_reason"]
    assert launches(qemu_api, node) == []
