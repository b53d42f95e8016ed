"""The qemu provider: a node is a QEMU VM on the control plane's machine, booting the newest
registered boot artifact of its template.

Each node gets `DATA_DIR/nodes/<node id>/` (0700): its seed (`seed.json`, 0600, handed to the
guest by fw_cfg as `opt/powernode/seed`, never baked into an image), a 1 GiB state disk
(`state.img`, ext4 labelled `pn-state`, kept across stop/start), for disk boots a qcow2 overlay
over the registered image and a copy of the UEFI variable store, the serial console
(`console.log`, appended across boots and kept after terminate) and the runner's files.

The guest's only network is QEMU's user network with `restrict=on`: it reaches nothing but
`<qemu_guest_address>:<node port>`, which `guestfwd` connects (one `socat` per connection) to
the control plane's node API on this machine, so the seed names that address.

Provider account settings (all optional): `memory_mib`, `cpus`, `boot` (`initramfs`, the
default, or `disk`: UEFI from the disk artifact, else the qcow2 one), `accel` (`auto`, the
default: KVM when /dev/kvm is usable for the guest's arch, else TCG; or `kvm` / `tcg`) and
`stop_timeout_s` (how long a guest may take to power down before it is killed).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import platform
import shlex
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.bootstrap import write_private_file
from powernode.db.engine import Database
from powernode.errors import Invalid, NotFound
from powernode.images.spec import STATE_LABEL, ArchInfo, arch_info
from powernode.providers.drivers import ProviderDriver
from powernode.providers.qemu_artifacts import ArtifactFiles, latest_artifact
from powernode.providers.qemu_runner import QemuError, VmFiles, runner_for
from powernode.settings import Settings

STATE_DISK_BYTES = 1 << 30
TOOL_TIMEOUT_S = 120.0
SEED_FW_CFG_NAME = "opt/powernode/seed"
_HOST_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01


class QemuAccountSettings(BaseModel):
    """What a qemu provider account's `settings` may say (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    memory_mib: int | None = Field(default=None, ge=64, le=1024 * 1024)
    cpus: int | None = Field(default=None, ge=1, le=256)
    boot: Literal["initramfs", "disk"] = "initramfs"
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    stop_timeout_s: float = Field(default=30.0, ge=0, le=3600)

    @classmethod
    def parse(cls, account_name: str, settings: dict[str, Any]) -> QemuAccountSettings:
        try:
            return cls.model_validate(settings)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise Invalid(
                f"provider account {account_name} has invalid settings: {problems}"
            ) from None


def kvm_usable(arch: str, device: Path = Path("/dev/kvm")) -> bool:
    """Whether KVM can run a guest of `arch` here: the host is that arch, the device opens
    read-write and creates a VM, and (x86) the CPU advertises vmx or svm; a /dev/kvm without
    hardware virtualization behind it (some sandboxes) creates VMs that cannot run."""
    if _HOST_ARCH.get(platform.machine()) != arch:
        return False
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION) != 12:
            return False
        os.close(fcntl.ioctl(fd, _KVM_CREATE_VM, 0))
    except OSError:
        return False
    finally:
        os.close(fd)
    if arch == "amd64":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return any(
            line.startswith("flags") and ({"vmx", "svm"} & set(line.split()))
            for line in flags.splitlines()
        )
    return True


def qemu_option(value: str | Path) -> str:
    """A value inside a QEMU `key=value,...` option: commas are doubled."""
    return str(value).replace(",", ",,")


@dataclass(frozen=True)
class InitramfsBoot:
    kernel: Path
    initrd: Path
    cmdline: str

    mode: Literal["initramfs"] = "initramfs"


@dataclass(frozen=True)
class DiskBoot:
    firmware_code: Path
    firmware_vars: Path
    """The node's own copy of the variable store."""
    disk: Path
    """The node's qcow2 overlay over the registered image."""

    mode: Literal["disk"] = "disk"


@dataclass(frozen=True)
class VmPlan:
    """Everything the command line says, decided before QEMU runs."""

    name: str
    arch: ArchInfo
    accel: Literal["kvm", "tcg"]
    memory_mib: int
    cpus: int
    vm: VmFiles
    seed: Path
    state_disk: Path
    guest_address: str
    node_port: int
    connector: tuple[str, ...]
    """The command `guestfwd` runs per guest connection (stdin/stdout = the connection)."""
    boot: InitramfsBoot | DiskBoot


def qemu_command(plan: VmPlan) -> list[str]:
    """The full `qemu-system-*` argv for `plan`."""
    argv = [
        plan.arch.qemu_system,
        "-name",
        qemu_option(plan.name),
        "-machine",
        plan.arch.qemu_machine,
        "-accel",
        plan.accel,
    ]
    if plan.accel == "kvm":
        argv += ["-cpu", "host"]
    elif plan.arch.name == "arm64":
        argv += ["-cpu", "max"]
    connector = " ".join(shlex.quote(part) for part in plan.connector)
    guestfwd = f"tcp:{plan.guest_address}:{plan.node_port}-cmd:{connector}"
    argv += [
        "-m",
        str(plan.memory_mib),
        "-smp",
        str(plan.cpus),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        f"file,id=serial0,path={qemu_option(plan.vm.console)},append=on",
        "-serial",
        "chardev:serial0",
        "-fw_cfg",
        f"name={SEED_FW_CFG_NAME},file={qemu_option(plan.seed)}",
        "-netdev",
        f"user,id=net0,restrict=on,guestfwd={qemu_option(guestfwd)}",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
    ]
    boot = plan.boot
    if isinstance(boot, DiskBoot):
        argv += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={qemu_option(boot.firmware_code)}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={qemu_option(boot.firmware_vars)}",
            "-drive",
            f"if=virtio,format=qcow2,file={qemu_option(boot.disk)}",
        ]
    argv += ["-drive", f"if=virtio,format=raw,file={qemu_option(plan.state_disk)}"]
    if isinstance(boot, InitramfsBoot):
        argv += [
            "-kernel",
            str(boot.kernel),
            "-initrd",
            str(boot.initrd),
            "-append",
            boot.cmdline,
        ]
    argv += [
        "-qmp",
        f"unix:{plan.vm.qmp_name},server=on,wait=off",
        "-pidfile",
        str(plan.vm.pidfile),
        "-daemonize",
    ]
    return argv


def guest_urls(settings: Settings) -> list[str]:
    """The node API as a guest sees it: the forwarded address."""
    host = settings.qemu_guest_address
    if ":" in host:
        host = f"[{host}]"
    return [f"https://{host}:{settings.node_port}"]


def guest_seed(settings: Settings, seed: dict[str, Any]) -> dict[str, Any]:
    return {**seed, "urls": guest_urls(settings)}


async def run_tool(argv: list[str], *, package: str) -> None:
    """Run a helper (mkfs.ext4, qemu-img) to completion; a failure says what it printed."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except FileNotFoundError:
        raise QemuError(f"{argv[0]} is not installed: apt-get install {package}") from None
    try:
        async with asyncio.timeout(TOOL_TIMEOUT_S):
            output, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise QemuError(f"{argv[0]} did not finish within {TOOL_TIMEOUT_S:.0f}s") from None
    if proc.returncode != 0:
        text = output.decode(errors="replace").strip()[-1000:]
        raise QemuError(f"{' '.join(argv)} failed with status {proc.returncode}: {text}")


@dataclass(frozen=True)
class NodeFacts:
    """What the database says about a qemu node when it starts."""

    arch: str
    account: QemuAccountSettings
    artifact: ArtifactFiles


class QemuDriver(ProviderDriver):
    kind = "qemu"

    def node_dir(self, node_id: uuid.UUID) -> Path:
        return self.settings.data_dir / "nodes" / str(node_id)

    def vm_files(self, node_id: uuid.UUID) -> VmFiles:
        return VmFiles(self.node_dir(node_id))

    def console_path(self, node_id: uuid.UUID) -> Path | None:
        return self.vm_files(node_id).console

    async def _facts(self, node_id: uuid.UUID) -> NodeFacts:
        from powernode.fleet.models import Node
        from powernode.providers.models import ProviderAccount
        from powernode.templates.models import Template

        # The runtime hands its database over; used alone, the driver opens a short-lived one.
        db = self.db or Database(self.settings.effective_database_url, pool_size=1)
        try:
            async with db.read_sessions() as session:
                node = await session.get(Node, node_id)
                if node is None:
                    raise NotFound(f"node {node_id} does not exist")
                account = (
                    await session.get(ProviderAccount, node.provider_account_id)
                    if node.provider_account_id
                    else None
                )
                if account is None:
                    raise Invalid(f"node {node.name} has no provider account")
                parsed = QemuAccountSettings.parse(account.name, account.settings or {})
                if node.template_id is None:
                    raise Invalid(
                        f"node {node.name} has no template; a qemu node boots its template's "
                        "artifacts: create it with --template T"
                    )
                template = await session.get(Template, node.template_id)
                name = template.name if template else str(node.template_id)
                artifact = await self._artifact(session, node.template_id, name, node.arch, parsed)
                return NodeFacts(arch=node.arch, account=parsed, artifact=artifact)
        finally:
            if db is not self.db:
                await db.dispose()

    async def _artifact(
        self,
        session: AsyncSession,
        template_id: uuid.UUID,
        template: str,
        arch: str,
        account: QemuAccountSettings,
    ) -> ArtifactFiles:
        """The initramfs artifact, or for disk boots the disk artifact, else the qcow2 one."""
        if account.boot == "initramfs":
            return await latest_artifact(
                session, self.settings, template_id, arch, "initramfs", template_name=template
            )
        try:
            return await latest_artifact(
                session, self.settings, template_id, arch, "disk", template_name=template
            )
        except NotFound as missing:
            if not missing.detail.startswith("no disk artifact"):
                raise
        try:
            return await latest_artifact(
                session, self.settings, template_id, arch, "qcow2", template_name=template
            )
        except NotFound as missing:
            if not missing.detail.startswith("no qcow2 artifact"):
                raise
            raise NotFound(
                f"no disk or qcow2 artifact for template {template} arch {arch}: run "
                f"`powernode image build {template} --arch {arch} --format disk`"
            ) from None

    async def start(self, node_id: uuid.UUID, seed: dict[str, Any]) -> None:
        runner = runner_for(self.settings)
        runner.check()
        vm = self.vm_files(node_id)
        if runner.running(vm):
            return
        facts = await self._facts(node_id)
        arch = arch_info(facts.arch)
        vm.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(vm.directory, 0o700)
        seed_path = vm.directory / "seed.json"
        write_private_file(seed_path, json.dumps(guest_seed(self.settings, seed), indent=2) + "\n")
        state_disk = await self._state_disk(vm.directory)
        boot: InitramfsBoot | DiskBoot
        if facts.account.boot == "initramfs":
            artifact = facts.artifact
            boot = InitramfsBoot(
                kernel=artifact.file("vmlinuz"),
                initrd=artifact.file("initramfs.img"),
                cmdline=str(artifact.details.get("cmdline") or f"console={arch.console}"),
            )
        else:
            boot = await self._disk_boot(vm.directory, arch, facts.artifact)
        accel = facts.account.accel
        if accel == "auto":
            accel = "kvm" if kvm_usable(arch.name) else "tcg"
        socat = shutil.which("socat")
        if socat is None:
            raise QemuError("socat is not installed (guestfwd needs it): apt-get install socat")
        plan = VmPlan(
            name=f"powernode-{node_id}",
            arch=arch,
            accel=accel,
            memory_mib=facts.account.memory_mib or self.settings.qemu_memory_mib,
            cpus=facts.account.cpus or self.settings.qemu_cpus,
            vm=vm,
            seed=seed_path,
            state_disk=state_disk,
            guest_address=self.settings.qemu_guest_address,
            node_port=self.settings.node_port,
            connector=(socat, "-", f"TCP:127.0.0.1:{self.settings.node_port}"),
            boot=boot,
        )
        (vm.directory / "vm.json").write_text(
            json.dumps(
                {
                    "arch": arch.name,
                    "accel": plan.accel,
                    "boot": boot.mode,
                    "artifact": str(facts.artifact.id),
                    "memory_mib": plan.memory_mib,
                    "cpus": plan.cpus,
                    "stop_timeout_s": facts.account.stop_timeout_s,
                },
                indent=2,
            )
            + "\n"
        )
        await runner.launch(qemu_command(plan), vm)

    async def _state_disk(self, directory: Path) -> Path:
        """The node's state disk, made (sparse, ext4 with fs-verity) at its first start."""
        path = directory / "state.img"
        if path.exists():
            return path
        tmp = directory / "state.img.new"
        with tmp.open("wb") as handle:
            handle.truncate(STATE_DISK_BYTES)
        try:
            await run_tool(
                ["mkfs.ext4", "-q", "-F", "-L", STATE_LABEL, "-O", "verity", str(tmp)],
                package="e2fsprogs",
            )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.rename(path)
        return path

    async def _disk_boot(
        self, directory: Path, arch: ArchInfo, artifact: ArtifactFiles
    ) -> DiskBoot:
        code = next((p for p in arch.firmware_code if p.exists()), None)
        template = next((p for p in arch.firmware_vars if p.exists()), None)
        if code is None or template is None:
            package = "ovmf" if arch.name == "amd64" else "qemu-efi-aarch64"
            raise QemuError(
                f"no UEFI firmware for {arch.name} (looked for "
                f"{', '.join(str(p) for p in (*arch.firmware_code, *arch.firmware_vars))}): "
                f"apt-get install {package}"
            )
        variables = directory / "efi-vars.fd"
        if not variables.exists():
            shutil.copyfile(template, directory / "efi-vars.fd.new")
            (directory / "efi-vars.fd.new").rename(variables)
        disk = directory / "disk.qcow2"
        if not disk.exists():
            backing_format = "raw" if artifact.format == "disk" else "qcow2"
            tmp = directory / "disk.qcow2.new"
            await run_tool(
                [
                    "qemu-img",
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    backing_format,
                    "-b",
                    str(artifact.main),
                    str(tmp),
                ],
                package="qemu-utils",
            )
            tmp.rename(disk)
        return DiskBoot(firmware_code=code, firmware_vars=variables, disk=disk)

    def _vm_facts(self, node_id: uuid.UUID) -> dict[str, Any]:
        try:
            facts: dict[str, Any] = json.loads((self.node_dir(node_id) / "vm.json").read_text())
        except (OSError, ValueError):
            return {}
        return facts

    async def stop(self, node_id: uuid.UUID) -> None:
        timeout = float(self._vm_facts(node_id).get("stop_timeout_s", 30.0))
        await runner_for(self.settings).stop(self.vm_files(node_id), timeout)

    async def terminate(self, node_id: uuid.UUID) -> None:
        await self.stop(node_id)
        directory = self.node_dir(node_id)
        # The console log stays for the post-mortem; disks, seed and firmware state go.
        for name in ("state.img", "disk.qcow2", "efi-vars.fd", "seed.json", VmFiles.qmp_name):
            (directory / name).unlink(missing_ok=True)

    def status(self, node_id: uuid.UUID) -> dict[str, Any]:
        vm = self.vm_files(node_id)
        runner = runner_for(self.settings)
        facts = self._vm_facts(node_id)
        return {
            "pid": runner.pid(vm),
            "running": runner.running(vm),
            "console": str(vm.console),
            "accel": facts.get("accel"),
            "boot": facts.get("boot"),
            "directory": str(vm.directory),
        }
