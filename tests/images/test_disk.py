"""The raw GPT disk image, checked with real tools: sfdisk, mtools, dumpe2fs, debugfs.

Manual boot smoke check (done while writing this, not run here; the end-to-end suite boots
the disk image through the real pipeline): build `disk.raw` from a Debian amd64 mmdebstrap
tree with a `/usr/sbin/init` that prints a marker and powers off, then
`qemu-system-x86_64 -machine q35 -accel tcg -m 1024 -nographic -no-reboot
-drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
-drive if=pflash,format=raw,file=<copy of OVMF_VARS_4M.fd>
-drive file=disk.raw,format=raw,if=virtio`
prints the marker and `root=LABEL=pn-root` in /proc/cmdline after ~20 s (OVMF, GRUB, the
kernel, Debian's initrd mounting the ext4 root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from powernode.errors import Invalid
from powernode.images.disk import build_disk
from powernode.images.spec import ESP_LABEL, ROOT_LABEL, BootInputs, Format, FormatResult
from powernode.images.tools import file_sha256
from tests.images.formats import (
    DISK_INITRD,
    EPOCH,
    KERNEL,
    TOOLS_CACHE,
    boot_inputs,
    pe_machine,
    write_tree_tar,
)

FREE = 8 << 20
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def _build(inputs: BootInputs, out: Path) -> FormatResult:
    return build_disk(inputs, out, tools_cache=TOOLS_CACHE, root_free_bytes=FREE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[BootInputs, FormatResult]:
    tmp = tmp_path_factory.mktemp("disk")
    inputs = boot_inputs(tmp)
    return inputs, _build(inputs, tmp / "out")


def _run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, check=True, text=True).stdout


def _partition(disk: Path, index: int, out: Path) -> Path:
    table = json.loads(_run("sfdisk", "-J", disk))["partitiontable"]
    part = table["partitions"][index]
    with disk.open("rb") as src, out.open("wb") as dst:
        src.seek(part["start"] * 512)
        dst.write(src.read(part["size"] * 512))
    return out


def _debugfs(image: Path, request: str) -> str:
    return _run("debugfs", "-R", request, image)


def test_disk_is_gpt_with_an_esp_and_an_ext4_root(built: tuple[BootInputs, FormatResult]) -> None:
    """sfdisk sees a GPT with the ESP first and the root (x86-64 root type) second."""
    _, result = built
    assert result.format is Format.DISK
    disk = result.files[0]
    assert disk.name == "disk.raw"
    assert disk.sha256 == file_sha256(disk.path)
    table = json.loads(_run("sfdisk", "-J", disk.path))["partitiontable"]
    assert table["label"] == "gpt"
    esp, root = table["partitions"]
    assert (esp["type"], esp["name"]) == (ESP_TYPE, ESP_LABEL)
    assert (root["type"], root["name"]) == ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", ROOT_LABEL)
    assert esp["start"] == 2048
    assert root["start"] == esp["start"] + esp["size"]
    assert result.details["partition_table"]["id"] == table["id"]  # type: ignore[index]


def test_esp_holds_grub_the_kernel_and_the_disk_initrd(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """The ESP has GRUB at the removable path, its config booting pn-root, and the kernel."""
    inputs, result = built
    esp = _partition(result.files[0].path, 0, tmp_path / "esp.img")
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    listing = subprocess.run(
        ["mdir", "-/", "-b", "-i", esp, "::/"], capture_output=True, check=True, text=True, env=env
    ).stdout
    assert "::/EFI/BOOT/BOOTX64.EFI" in listing
    assert "::/vmlinuz" in listing
    assert "::/initrd.img" in listing
    label = subprocess.run(
        ["mlabel", "-s", "-i", esp, "::"], capture_output=True, check=True, text=True, env=env
    )
    assert ESP_LABEL in label.stdout

    def mtype(path: str) -> bytes:
        return subprocess.run(
            ["mtype", "-i", esp, f"::/{path}"], capture_output=True, check=True, env=env
        ).stdout

    config = mtype("EFI/BOOT/grub.cfg").decode()
    assert f"--label {ESP_LABEL}" in config
    assert "linux /vmlinuz 'root=LABEL=pn-root' 'rw' 'console=ttyS0' 'quiet'" in config
    assert "initrd /initrd.img" in config
    assert mtype("vmlinuz") == KERNEL
    assert mtype("initrd.img") == DISK_INITRD
    assert pe_machine(mtype("EFI/BOOT/BOOTX64.EFI")) == 0x8664
    assert result.details["cmdline"] == "root=LABEL=pn-root rw console=ttyS0 quiet"
    assert inputs.kernel_version == result.details["kernel_version"]


def test_root_keeps_owners_modes_links_devices_and_xattrs(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """debugfs shows the tree tar's files with their owners, modes, times and xattrs."""
    _, result = built
    root = _partition(result.files[0].path, 1, tmp_path / "root.img")

    def ls(folder: str) -> dict[str, list[str]]:
        """name -> [inode, mode, uid, gid]"""
        rows = [line.split() for line in _debugfs(root, f"ls -l {folder}").splitlines()]
        return {row[-1]: [row[0], row[1], row[3], row[4]] for row in rows if row}

    etc = ls("/etc")
    assert etc["shadow"][1:4] == ["100640", "0", "42"]
    assert etc["locked"][1] == "100000"
    assert ls("/home/user")["notes"][1:4] == ["100600", "1000", "1000"]
    bins = ls("/usr/bin")
    assert bins["su"][1] == "104755"
    assert bins["su-hard"][0] == bins["su"][0]  # a hard link: one inode
    assert bins["su-link"][1] == "120777"
    dev = ls("/dev")
    assert dev["null"][1] == "20666"
    assert dev["initctl"][1] == "10600"
    assert "Type: character special" in _debugfs(root, "stat /dev/null")
    assert "Device major/minor number: 01:03" in _debugfs(root, "stat /dev/null")
    assert ls("/")["lib"][1] == "120777"
    assert "/usr/lib" not in _debugfs(root, "stat /lib")  # fast symlink to "usr/lib"
    assert 'user.powernode (4) = "test"' in _debugfs(root, "ea_list /usr/bin/ping")
    stat = _debugfs(root, "stat /etc/hostname")
    stamp = f"{EPOCH - 1000:#010x}:00000000"  # the tar's time, not the build's
    assert f" ctime: {stamp}" in stat
    assert f"crtime: {stamp}" in stat
    assert _debugfs(root, "cat /usr/sbin/init").startswith("#!/bin/sh")


def test_root_is_labelled_with_verity_and_the_reported_uuid(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """dumpe2fs: label pn-root, the verity feature, 4 KiB blocks, the UUID in the details."""
    _, result = built
    root = _partition(result.files[0].path, 1, tmp_path / "root.img")
    header = dict(
        line.split(":", 1) for line in _run("dumpe2fs", "-h", root).splitlines() if ":" in line
    )
    assert header["Filesystem volume name"].strip() == ROOT_LABEL
    assert "verity" in header["Filesystem features"].split()
    assert header["Block size"].strip() == "4096"
    assert header["Filesystem UUID"].strip() == result.details["root_fs_uuid"]
    _run("e2fsck", "-f", "-n", root)


def test_same_inputs_give_a_byte_identical_disk_image(
    built: tuple[BootInputs, FormatResult], tmp_path: Path
) -> None:
    """A second build elsewhere gives the same bytes; another tree gives other identifiers."""
    inputs, first = built
    again = _build(boot_inputs(tmp_path / "a", tree_tar=inputs.tree_tar), tmp_path / "a" / "out")
    assert again.files[0].sha256 == first.files[0].sha256
    other_tree = tmp_path / "other.tar"
    write_tree_tar(other_tree, extra_file=b"changed\n")
    other = _build(boot_inputs(tmp_path / "b", tree_tar=other_tree), tmp_path / "b" / "out")
    assert other.details["root_fs_uuid"] != first.details["root_fs_uuid"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_building_needs_no_root_privileges(tmp_path: Path) -> None:
    """Run as an unprivileged user, the build still keeps root's owners and device nodes."""
    code = (
        "import sys; from pathlib import Path; from tests.images.formats import boot_inputs;"
        "from powernode.images.disk import build_disk;"
        "t = Path(sys.argv[1]); r = build_disk(boot_inputs(t / 'in'), t / 'out', "
        "tools_cache=Path(sys.argv[2]), root_free_bytes=8 << 20); print(r.files[0].sha256)"
    )
    # pytest's own temporary directories are private to root: use a world-writable one.
    with tempfile.TemporaryDirectory(prefix="pn-unprivileged-") as shared:
        Path(shared).chmod(0o777)
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--reset-env",
                sys.executable,
                "-c",
                code,
                shared,
                str(TOOLS_CACHE),
            ],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            env={"PATH": os.environ["PATH"], "HOME": shared},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        root = _partition(Path(shared) / "out" / "disk.raw", 1, tmp_path / "root.img")
    assert "Device major/minor number: 01:03" in _debugfs(root, "stat /dev/null")
    assert "User:     0   Group:    42" in _debugfs(root, "stat /etc/shadow")
    as_root = _build(boot_inputs(tmp_path / "in"), tmp_path / "out")
    assert proc.stdout.strip() == as_root.files[0].sha256


def test_arm64_disk_carries_an_aarch64_grub(tmp_path: Path) -> None:
    """arm64: GRUB built from grub-efi-arm64-bin's modules at BOOTAA64.EFI, arm64 root type."""
    inputs = boot_inputs(tmp_path, arch="arm64")
    result = _build(inputs, tmp_path / "out")
    table = result.details["partition_table"]
    assert isinstance(table, dict)
    assert table["partitions"][1]["type"] == "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
    esp = _partition(result.files[0].path, 0, tmp_path / "esp.img")
    efi = subprocess.run(
        ["mtype", "-i", esp, "::/EFI/BOOT/BOOTAA64.EFI"],
        capture_output=True,
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert pe_machine(efi) == 0xAA64
    assert "console=ttyAMA0" in str(result.details["cmdline"])


def test_a_tree_member_leaving_the_root_is_refused(tmp_path: Path) -> None:
    """A tar entry with `..` in its name is refused before anything is written."""
    import io
    import tarfile

    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("etc/../../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Invalid, match="leaves the root"):
        _build(boot_inputs(tmp_path, tree_tar=bad), tmp_path / "out")
    assert not (tmp_path.parent / "escape").exists()
