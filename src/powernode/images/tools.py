"""Running the external tools the image builder drives (mkfs, sfdisk, mtools, grub, xorriso...).

Every tool runs from an argv list (never a shell), with its output captured; a failure raises
`ToolFailed` naming what was being done, the command and the tail of its stderr, and a missing
tool raises `ToolMissing` naming the Debian package that provides it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from powernode.errors import PowernodeError, Unavailable
from powernode.images.spec import BuiltFile

STDERR_TAIL = 2000
"""How many characters of a failed tool's stderr (or stdout) an error carries."""

PACKAGES: dict[str, str] = {
    "mkfs.ext4": "e2fsprogs",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "sfdisk": "fdisk",
    "mkfs.vfat": "dosfstools",
    "mformat": "mtools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mdir": "mtools",
    "mtype": "mtools",
    "grub-mkstandalone": "grub-common",
    "grub-mkrescue": "grub-common",
    "grub-mkimage": "grub-common",
    "xorriso": "xorriso",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "skopeo": "skopeo",
    "zstd": "zstd",
    "cpio": "cpio",
}
"""The Debian package that provides each tool, for the error that says what to install."""


class ToolMissing(Unavailable):
    """A tool the build needs is not installed."""

    title = "Tool not installed"


class ToolFailed(PowernodeError):
    """A tool exited non-zero."""

    title = "Image build tool failed"


def require(tool: str, package: str | None = None) -> str:
    """The full path of `tool`; ToolMissing naming the Debian package when it is not found."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        pkg = package or PACKAGES.get(tool)
        hint = f"install the Debian package {pkg} (apt-get install {pkg})" if pkg else ""
        raise ToolMissing(
            f"{tool} is not installed" + (f"; {hint}" if hint else ""), tool=tool, package=pkg
        )
    return found


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` (the tool looked up on PATH), capture its output, raise on failure.

    `what` says what the command does ("formatting the root file system"), for the error.
    `env` entries are added to this process's environment (not a replacement for it).
    """
    if not argv:
        raise ValueError("run() needs a command")
    args = [os.fspath(a) for a in argv]
    args[0] = require(args[0]) if os.sep not in args[0] else args[0]
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(  # noqa: S603 - argv list built by our own code, no shell
            args,
            cwd=cwd,
            env=full_env,
            input=input,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError:
        raise ToolMissing(f"{args[0]} could not be executed while {what}", tool=args[0]) from None
    if proc.returncode != 0:
        both = b"\n".join(o.strip() for o in (proc.stdout, proc.stderr) if o.strip())
        tail = both.decode(errors="replace")[-STDERR_TAIL:]
        raise ToolFailed(
            f"{what} failed: {Path(args[0]).name} exited {proc.returncode}"
            + (f": {tail}" if tail else ""),
            command=args,
            returncode=proc.returncode,
        )
    return proc


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def built_file(path: Path, name: str | None = None) -> BuiltFile:
    """A `BuiltFile` for `path` (named by its file name unless `name` is given)."""
    return BuiltFile(
        name=name or path.name, path=path, sha256=file_sha256(path), size=path.stat().st_size
    )


GRUB_LIB = Path("/usr/lib/grub")
DEBIAN_SUITE = "bookworm"


def grub_platform_dir(target: str, package: str, tools_cache: Path) -> Path:
    """GRUB's module directory for `target` (`x86_64-efi`, `arm64-efi`, `i386-pc`).

    The host's own (`/usr/lib/grub/<target>`) when installed; otherwise `package` for the
    foreign architecture is extracted, not installed, with `mmdebstrap --variant=extract`
    into `tools_cache` once and reused (so an amd64 host builds arm64 boot loaders).
    """
    host = GRUB_LIB / target
    if (host / "moddep.lst").is_file():
        return host
    deb_arch = {"arm64-efi": "arm64", "x86_64-efi": "amd64", "i386-pc": "amd64"}.get(target)
    if deb_arch is None:
        raise ToolMissing(f"GRUB modules for {target} are not installed; install {package}")
    cached = tools_cache / f"grub-{target}" / target
    if (cached / "moddep.lst").is_file():
        return cached
    tools_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tools_cache, prefix=".grub-") as tmp:
        tarball = Path(tmp) / "extract.tar"
        run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=extract",
                f"--arch={deb_arch}",
                f"--include={package}",
                DEBIAN_SUITE,
                tarball,
            ],
            what=f"fetching the {deb_arch} Debian package {package} (GRUB modules for {target})",
        )
        staged = Path(tmp) / target
        staged.mkdir()
        prefix = f"./usr/lib/grub/{target}/"
        with tarfile.open(tarball) as tar:
            for member in tar:
                name = member.name if member.name.startswith("./") else "./" + member.name
                if not name.startswith(prefix) or not member.isfile():
                    continue
                rel = name[len(prefix) :]
                if "/" in rel or rel in ("", ".", ".."):
                    continue
                source = tar.extractfile(member)
                assert source is not None
                with source, (staged / rel).open("wb") as out:
                    shutil.copyfileobj(source, out)
        if not (staged / "moddep.lst").is_file():
            raise ToolMissing(f"{package} ({deb_arch}) has no /usr/lib/grub/{target}/moddep.lst")
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            staged.rename(cached)
        except OSError:
            if not (cached / "moddep.lst").is_file():
                raise
    return cached
