"""The raw GPT disk image: an EFI system partition (GRUB, the kernel and Debian's initrd) and
an ext4 root partition labelled `pn-root`, built without root privileges or loop devices.

The root file system is made with `mkfs.ext4 -d DIR`: e2fsprogs 1.47.0 (bookworm) does not read
tarballs with `-d` (that arrived in 1.47.1), so the tree tar is unpacked into a scratch
directory as whoever runs the build, and what an unprivileged unpack cannot keep (owners,
device nodes, modes without owner read access, extended attributes) and what the copy cannot
pin (change and creation times) is then set inode by inode with one `debugfs -w` script.

The ESP is made with `mkfs.vfat` and filled with mtools; the two partitions are placed into
the image with `dd conv=notrunc,sparse` after `sfdisk` wrote the partition table into it.

Reproducibility: partition GUIDs, the root UUID, its directory hash seed and the ESP volume id
are derived from the tree tar's sha256 and the architecture; file system times come from
`source_date_epoch` (E2FSPROGS_FAKE_TIME, SOURCE_DATE_EPOCH for mtools, `--invariant` for
mkfs.vfat), and GRUB is built with `grub-mkimage` (deterministic; `grub-mkstandalone` is not,
its memdisk tar records the build time). The same inputs give a byte-identical `disk.raw`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from powernode.errors import Invalid
from powernode.images.spec import (
    ESP_LABEL,
    ROOT_LABEL,
    ArchInfo,
    BootInputs,
    Format,
    FormatResult,
)
from powernode.images.tools import ToolFailed, built_file, file_sha256, grub_platform_dir, run
from powernode.images.tree import file_type

MIB = 1 << 20
SECTOR = 512
BLOCK = 4096
"""ext4 block size: fs-verity on ext4 needs it equal to the page size (4 KiB on both arches)."""
ROOT_FREE_BYTES = 256 * MIB
"""Free space left in the root file system by default."""
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPES = {
    "amd64": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
    "arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
}
"""Discoverable Partitions Specification root types, per architecture."""
LINUX_FS_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
NAMESPACE = uuid.UUID("5b0c1d6e-2f0e-4a57-9a43-7e2b8f1c0d11")
"""uuid5 namespace for the identifiers derived from the inputs."""
GRUB_MODULES = (
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "iso9660",
    "linux",
    "search",
    "search_label",
    "search_fs_uuid",
    "echo",
    "gzio",
    "normal",
    "efi_gop",
)
"""Modules built into the GRUB EFI image (those the target has); no module is loaded later."""


@dataclass(frozen=True)
class RootFs:
    path: Path
    uuid: str
    size: int


def build_disk(
    inputs: BootInputs,
    out_dir: Path,
    *,
    tools_cache: Path,
    root_free_bytes: int = ROOT_FREE_BYTES,
) -> FormatResult:
    """Write `disk.raw` (GPT: ESP + ext4 root) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = inputs.work_dir / "disk"
    work.mkdir(parents=True, exist_ok=True)
    ids = _Ids(inputs)
    root = build_root_fs(
        inputs.tree_tar,
        work / "root.ext4",
        unpack_dir(work, inputs.tree_tar),
        fs_uuid=ids.get("root-fs"),
        hash_seed=ids.get("root-hash-seed"),
        source_date_epoch=inputs.source_date_epoch,
        free_bytes=root_free_bytes,
    )
    esp = build_esp(inputs, work / "esp.vfat", work, tools_cache=tools_cache, ids=ids)
    disk = out_dir / "disk.raw"
    table = assemble_gpt(
        disk,
        esp=esp,
        root=root.path,
        root_type=ROOT_TYPES.get(inputs.arch.name, LINUX_FS_TYPE),
        ids=ids,
    )
    # The partitions are in the image now; the stage's scratch space holds no second copy.
    root.path.unlink()
    esp.unlink()
    return FormatResult(
        format=Format.DISK,
        files=(built_file(disk),),
        details={
            "partition_table": table,
            "root_fs_uuid": root.uuid,
            "root_label": ROOT_LABEL,
            "esp_label": ESP_LABEL,
            "kernel_version": inputs.kernel_version,
            "cmdline": disk_cmdline(inputs),
            "boot": f"UEFI: EFI/BOOT/{inputs.arch.efi_boot_file} (GRUB)",
        },
    )


class _Ids:
    """Identifiers derived from the tree's content and the architecture."""

    def __init__(self, inputs: BootInputs) -> None:
        self._seed = f"{inputs.arch.name}/{file_sha256(inputs.tree_tar)}"

    def get(self, role: str) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self._seed}/{role}"))


def disk_cmdline(inputs: BootInputs) -> str:
    """The kernel command line of a disk boot: the root file system, then the RAM boot's."""
    words = [f"root=LABEL={ROOT_LABEL}", "rw"]
    if "console=" not in inputs.cmdline:
        words.append(f"console={inputs.arch.console}")
    return " ".join([*words, *inputs.cmdline.split()])


# the root file system


SHM = Path("/dev/shm")  # noqa: S108 - only through mkdtemp (private, unpredictable)
SHM_HEADROOM = 2 << 30
"""RAM left free when the tree is unpacked into /dev/shm."""


def unpack_dir(work: Path, tree_tar: Path) -> Path:
    """Where to unpack the tree for `mkfs.ext4 -d`: a tmpfs when RAM allows, else `work`.

    Unpacking and removing tens of thousands of files on a busy disk costs more than
    making the file system; in RAM both are quick.
    """
    need = tree_tar.stat().st_size * 2 + SHM_HEADROOM
    try:
        shm = os.statvfs(SHM)
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return work / "tree"
    available = next(
        (
            int(line.split()[1]) * 1024
            for line in meminfo.splitlines()
            if line.startswith("MemAvailable:")
        ),
        0,
    )
    if shm.f_bavail * shm.f_frsize >= need and available >= need and os.access(SHM, os.W_OK):
        return Path(tempfile.mkdtemp(dir=SHM, prefix="powernode-disk-"))
    return work / "tree"


@dataclass
class _Fixups:
    """What `debugfs` must set after `mkfs.ext4 -d` copied the unpacked tree."""

    lines: list[str] = field(default_factory=list)
    xattrs: list[tuple[str, str, bytes]] = field(default_factory=list)


def build_root_fs(
    tree_tar: Path,
    image: Path,
    scratch: Path,
    *,
    fs_uuid: str,
    hash_seed: str,
    source_date_epoch: int,
    free_bytes: int = ROOT_FREE_BYTES,
    label: str = ROOT_LABEL,
) -> RootFs:
    """An ext4 image of `tree_tar` (owners, modes, devices, xattrs kept) with `verity` on."""
    if scratch.exists() and any(scratch.iterdir()):
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        fixups, content = _unpack(tree_tar, scratch, source_date_epoch)
        size = _round_up(int(content * 1.15) + free_bytes + 16 * MIB, MIB)
        image.unlink(missing_ok=True)
        with image.open("wb") as handle:
            handle.truncate(size)
        env = {"E2FSPROGS_FAKE_TIME": str(source_date_epoch), "MKE2FS_CONFIG": "/dev/null"}
        run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                str(BLOCK),
                "-I",
                "256",
                "-i",
                "16384",
                "-L",
                label,
                "-U",
                fs_uuid,
                "-O",
                "has_journal,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,"
                "sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum,verity",
                "-E",
                f"hash_seed={hash_seed},root_owner=0:0,lazy_itable_init=0,nodiscard",
                "-d",
                scratch,
                image,
            ],
            what="making the root file system (mkfs.ext4 -d)",
            env=env,
        )
        script = image.parent / "debugfs.cmds"
        _write_fixup_script(script, fixups, image.parent / "xattrs")
        what = "setting owners, devices and times in the root file system (debugfs)"
        proc = run(["debugfs", "-w", "-f", script, image], what=what, env=env)
        # debugfs exits 0 whatever its requests did; anything past its banner is an error.
        errors = [
            line
            for line in proc.stderr.decode(errors="replace").splitlines()
            if line.strip() and not line.startswith("debugfs ")
        ]
        if errors:
            raise ToolFailed(f"{what} failed: " + "; ".join(errors[:10]), command=["debugfs"])
        run(
            ["e2fsck", "-f", "-n", image],
            what="checking the root file system (e2fsck)",
            env=env,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return RootFs(path=image, uuid=fs_uuid, size=size)


def _unpack(tree_tar: Path, dest: Path, epoch: int) -> tuple[_Fixups, int]:
    """Unpack `tree_tar` into `dest` as this user; returns the fix-ups and the bytes used."""
    fixups = _Fixups()
    me = (os.geteuid(), os.getegid())
    real_dirs = {""}
    dir_times: list[tuple[Path, int]] = []
    content = 0
    with tarfile.open(tree_tar) as tar:
        for member in tar:
            rel = _relative(member.name)
            target = dest / rel if rel else dest
            mode = stat.S_IMODE(member.mode)
            mtime = min(int(member.mtime), epoch)
            if rel:
                _ensure_parents(dest, rel, real_dirs)
            content += BLOCK
            extracted_mode = mode
            if member.isdir():
                if rel and rel not in real_dirs:
                    if target.exists() or target.is_symlink():
                        raise Invalid(f"{tree_tar}: {member.name} is both a directory and not")
                    target.mkdir()
                    real_dirs.add(rel)
                extracted_mode = mode | 0o700
                dir_times.append((target, mtime))
            elif member.isreg():
                source = tar.extractfile(member)
                assert source is not None
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                content += _round_up(member.size, BLOCK)
                extracted_mode = mode | 0o400
            elif member.issym():
                os.symlink(member.linkname, target)
                content += _round_up(len(member.linkname), BLOCK)
            elif member.islnk():
                link_rel = _relative(member.linkname)
                os.link(dest / link_rel, target)
            elif member.ischr() or member.isblk() or member.isfifo():
                kind = "c" if member.ischr() else "b" if member.isblk() else "p"
                numbers = "" if kind == "p" else f" {member.devmajor} {member.devminor}"
                parent, _, base = rel.rpartition("/")
                fixups.lines += [
                    f"cd {_q('/' + parent)}",
                    f"mknod {_q(base)} {kind}{numbers}",
                    "cd /",
                ]
            else:
                raise Invalid(f"{tree_tar}: {member.name} has an unsupported tar type")
            special = member.ischr() or member.isblk() or member.isfifo()
            if not (member.issym() or member.islnk() or special):
                os.chmod(target, extracted_mode)
            if not (member.isdir() or member.islnk() or special):
                os.utime(target, (mtime, mtime), follow_symlinks=False)
            path = "/" + rel
            if member.islnk():
                continue
            fixes = []
            if (member.uid, member.gid) != me or member.ischr() or member.isblk():
                fixes += [f"uid {member.uid}", f"gid {member.gid}"]
            if member.issym():
                pass
            elif extracted_mode != mode or member.ischr() or member.isblk() or member.isfifo():
                fixes.append(f"mode 0{file_type(member) | mode:o}")
            if member.ischr() or member.isblk() or member.isfifo():
                fixes.append(f"mtime @{mtime}")
            fixes += [f"atime @{mtime}", f"ctime @{mtime}", f"crtime @{mtime}"]
            fixes += ["atime_extra 0", "ctime_extra 0", "mtime_extra 0", "crtime_extra 0"]
            fixups.lines += [f"sif {_q(path)} {fix}" for fix in fixes]
            for key, value in member.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    raw = value.encode("utf-8", "surrogateescape")
                    fixups.xattrs.append((path, key[len("SCHILY.xattr.") :], raw))
    for target, mtime in reversed(dir_times):
        os.utime(target, (mtime, mtime))
    return fixups, content


def _relative(name: str) -> str:
    """A tar member name as a path relative to the root; Invalid if it leaves the root."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Invalid(f"tree tar member {name!r} leaves the root")
    rel = "/".join(parts)
    if "\n" in rel or '"' in rel:
        raise Invalid(f"tree tar member {name!r}: quotes and newlines in file names unsupported")
    return rel


def _ensure_parents(dest: Path, rel: str, real_dirs: set[str]) -> None:
    """Create the missing parent directories of `rel`; refuse parents that are not ours."""
    parts = rel.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        if sub in real_dirs:
            continue
        path = dest / sub
        if path.is_symlink() or path.exists():
            raise Invalid(f"tree tar member {rel!r} lies under {sub!r}, which is not a directory")
        path.mkdir()
        real_dirs.add(sub)


def _q(path: str) -> str:
    return f'"{path}"'


def _write_fixup_script(script: Path, fixups: _Fixups, xattr_dir: Path) -> None:
    lines = list(fixups.lines)
    if fixups.xattrs:
        xattr_dir.mkdir(exist_ok=True)
        for n, (path, name, value) in enumerate(fixups.xattrs):
            value_file = xattr_dir / str(n)
            value_file.write_bytes(value)
            lines.append(f"ea_set -f {_q(str(value_file))} {_q(path)} {_q(name)}")
    script.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))


# the EFI system partition


def grub_config(inputs: BootInputs, *, kernel: str, initrd: str, cmdline: str, root: str) -> str:
    """An embedded GRUB config: find the boot file system (`root`: search arguments), boot."""
    words = " ".join(_grub_word(w) for w in cmdline.split())
    return (
        f"search --no-floppy --set=root {root}\n"
        f"echo 'powernode: loading {kernel}'\n"
        f"linux {kernel} {words}\n"
        f"initrd {initrd}\n"
        "boot\n"
    )


def _grub_word(word: str) -> str:
    if any(c in word for c in "'\"\\\n"):
        raise Invalid(f"kernel command line word {word!r}: quotes and backslashes unsupported")
    return f"'{word}'"


def grub_efi_image(
    arch: ArchInfo,
    config_text: str,
    out: Path,
    scratch: Path,
    *,
    tools_cache: Path,
    prefix: str = "/EFI/BOOT",
) -> Path:
    """A GRUB EFI executable with `config_text` embedded and every module it needs built in."""
    modules_dir = grub_platform_dir(arch.grub_efi_target, arch.grub_efi_package, tools_cache)
    config = scratch / "grub-embedded.cfg"
    config.write_text(config_text)
    modules = [m for m in GRUB_MODULES if (modules_dir / f"{m}.mod").is_file()]
    run(
        [
            "grub-mkimage",
            "-O",
            arch.grub_efi_target,
            "-d",
            modules_dir,
            "-p",
            prefix,
            "-c",
            config,
            "-o",
            out,
            *modules,
        ],
        what=f"building the GRUB EFI image for {arch.name}",
    )
    return out


def make_vfat(
    image: Path, size: int, label: str, volume_id: str, files: dict[str, Path], epoch: int
) -> None:
    """A FAT file system image of `size` bytes holding `files` (`"EFI/BOOT/X": source`)."""
    image.unlink(missing_ok=True)
    run(
        [
            "mkfs.vfat",
            "-C",
            "--invariant",
            *(["-F", "32"] if size >= 64 * MIB else []),
            "-i",
            volume_id,
            "-n",
            label,
            image,
            str(size // 1024),
        ],
        what=f"making the FAT file system {label}",
    )
    env = {"SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    made: set[str] = set()
    for dest in sorted(files):
        parts = dest.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in made:
                run(
                    ["mmd", "-i", image, f"::/{folder}"],
                    what=f"making {folder} on {label}",
                    env=env,
                )
                made.add(folder)
        run(
            ["mcopy", "-i", image, files[dest], f"::/{dest}"],
            what=f"copying {dest} onto {label}",
            env=env,
        )


def build_esp(
    inputs: BootInputs, image: Path, scratch: Path, *, tools_cache: Path, ids: _Ids
) -> Path:
    """The ESP: GRUB at the removable-media path, the kernel and Debian's initrd."""
    config = grub_config(
        inputs,
        kernel="/vmlinuz",
        initrd="/initrd.img",
        cmdline=disk_cmdline(inputs),
        root=f"--label {ESP_LABEL}",
    )
    efi = grub_efi_image(
        inputs.arch, config, scratch / inputs.arch.efi_boot_file, scratch, tools_cache=tools_cache
    )
    cfg_copy = scratch / "grub.cfg"
    cfg_copy.write_text(config)
    files = {
        f"EFI/BOOT/{inputs.arch.efi_boot_file}": efi,
        "EFI/BOOT/grub.cfg": cfg_copy,
        "vmlinuz": inputs.vmlinuz,
        "initrd.img": inputs.disk_initrd,
    }
    content = sum(_round_up(p.stat().st_size, 4096) for p in files.values())
    size = max(64 * MIB, _round_up(int(content * 1.1) + 8 * MIB, MIB))
    volume_id = ids.get("esp-volume-id").replace("-", "")[:8]
    make_vfat(image, size, ESP_LABEL, volume_id, files, inputs.source_date_epoch)
    return image


# the partition table


def assemble_gpt(
    disk: Path, *, esp: Path, root: Path, root_type: str, ids: _Ids
) -> dict[str, object]:
    """Write a GPT disk image holding `esp` and `root`; returns `sfdisk -J`'s table."""
    start = MIB
    esp_size = _round_up(esp.stat().st_size, MIB)
    root_start = start + esp_size
    root_size = _round_up(root.stat().st_size, MIB)
    total = root_start + root_size + MIB
    disk.unlink(missing_ok=True)
    with disk.open("wb") as handle:
        handle.truncate(total)
    script = (
        "label: gpt\n"
        f"label-id: {ids.get('disk-guid').upper()}\n"
        "unit: sectors\n"
        "first-lba: 2048\n"
        "sector-size: 512\n"
        "\n"
        f"start={start // SECTOR}, size={esp_size // SECTOR}, type={ESP_TYPE}, "
        f'uuid={ids.get("esp-partition").upper()}, name="{ESP_LABEL}"\n'
        f"start={root_start // SECTOR}, size={root_size // SECTOR}, type={root_type}, "
        f'uuid={ids.get("root-partition").upper()}, name="{ROOT_LABEL}"\n'
    )
    run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", disk],
        what="writing the partition table (sfdisk)",
        input=script.encode(),
    )
    for part, offset in ((esp, start), (root, root_start)):
        run(
            [
                "dd",
                f"if={part}",
                f"of={disk}",
                "bs=1M",
                f"seek={offset // MIB}",
                "conv=notrunc,sparse",
                "status=none",
            ],
            what=f"copying {part.name} into the disk image (dd)",
        )
    return partition_table(disk)


def partition_table(disk: Path) -> dict[str, object]:
    """`sfdisk -J`'s view of a disk image's partition table."""
    proc = run(["sfdisk", "-J", disk], what="reading the partition table (sfdisk -J)")
    doc = json.loads(proc.stdout)
    table = doc.get("partitiontable") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        raise Invalid(f"sfdisk -J {disk} printed no partition table")
    table.pop("device", None)
    for part in table.get("partitions", []):
        if isinstance(part, dict) and isinstance(part.get("node"), str):
            part["node"] = Path(part["node"]).name
    return table


def _round_up(value: int, unit: int) -> int:
    return max(unit, math.ceil(value / unit) * unit)
