"""The agent's Python libraries for a node image: the versions this control plane runs and was
tested with, from PyPI's wheels for the image's architecture and Python.

Debian's own packages are older (bookworm's cryptography lacks the X.509 chain verifier the
keyless trust policy uses), so the image carries its agent's dependencies in
`/usr/lib/powernode/python`, which the init puts first on the agent's PYTHONPATH; Debian's
Python itself and the rest of the system are untouched. Wheels are downloaded once per version
set and architecture into the build cache (`pip download --only-binary`), and unpacked in a
fixed order, so the image stays reproducible.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from powernode.images.rootfs import BuildToolError
from powernode.images.tree import Item, Overlay

VENDOR_DIR = "usr/lib/powernode/python"
DISTRIBUTIONS = (
    "anyio",
    "certifi",
    "cffi",
    "cryptography",
    "h11",
    "httpcore",
    "httpx",
    "idna",
    "pycparser",
    "typing_extensions",
    "zstandard",
)
"""What `powernode.agent` imports at run time, and what those import."""
PLATFORMS = {
    "amd64": "x86_64",
    "arm64": "aarch64",
}
GLIBC_MINORS = range(17, 37)
"""manylinux tags the image's glibc (2.36 in bookworm) can load."""


def requirements() -> list[str]:
    """`name==version` for each distribution, as installed beside this control plane."""
    pinned = []
    for name in DISTRIBUTIONS:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise BuildToolError(
                f"{name} is not installed beside powernode, so its version for node images is "
                "unknown; reinstall powernode"
            ) from None
    return pinned


def wheels_key(arch: str, python: tuple[int, int]) -> str:
    doc = {"arch": arch, "python": list(python), "requirements": requirements()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def fetch_wheels(arch: str, python: tuple[int, int], cache_dir: Path) -> list[Path]:
    """The wheels for `arch` and `python`, downloaded into the cache once."""
    target = cache_dir / "wheels" / wheels_key(arch, python)
    if (target / "done").exists():
        return sorted(target.glob("*.whl"))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    machine = PLATFORMS[arch]
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in GLIBC_MINORS]
    platforms += [f"manylinux2014_{machine}"]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        f"{python[0]}.{python[1]}",
        "--implementation",
        "cp",
        "--dest",
        str(partial),
        *(arg for platform in platforms for arg in ("--platform", platform)),
        *requirements(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise BuildToolError(
            f"cannot download the agent's Python wheels for {arch} (PyPI reachable?): "
            + (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        )
    (partial / "done").write_text("\n".join(requirements()) + "\n")
    if target.exists():
        shutil.rmtree(partial)
    else:
        partial.replace(target)
    return sorted(target.glob("*.whl"))


def add_wheels(overlay: Overlay, wheels: list[Path], *, epoch: int, work_dir: Path) -> None:
    """Unpack `wheels` into the overlay under VENDOR_DIR (files extracted to `work_dir`)."""
    origin = "agent libraries"
    unpacked = work_dir / "wheels"
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                name = info.filename
                if info.is_dir() or name.startswith("/") or ".." in name.split("/"):
                    continue
                destination = unpacked / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
                mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
                path = f"{VENDOR_DIR}/{name}"
                overlay.add_parents(path, origin, mtime=epoch)
                overlay.add(path, Item("file", mode, mtime=epoch, source=destination), origin)
