"""What powernode itself puts into a node image: the agent's Python package, the init, and a
few files naming the image.

The agent runs on the image's Debian Python with Debian's httpx, cryptography and zstandard; the
part of the `powernode` package it imports (the agent, the artifact client, the entry and
fs-verity helpers) is copied from this installation, byte for byte, with bytecode compiled for
the image's Python when it is the same version as ours (hash-based .pyc: no timestamps).
The node's seed is never here: it arrives by fw_cfg, cloud metadata or the command line.
"""

from __future__ import annotations

import hashlib
import json
import py_compile
import sys
from pathlib import Path

import powernode
from powernode.images.tree import Item, Overlay

PACKAGE_ROOT = Path(powernode.__file__).parent
AGENT_PARTS = (
    "__init__.py",
    "errors.py",
    "py.typed",
    "agent",
    "artifacts",
    "modules/__init__.py",
    "modules/entries.py",
    "modules/verity.py",
)
"""The files and directories of `powernode` the agent imports (a test checks the closure)."""
SITE = "usr/lib/python3/dist-packages/powernode"
INIT = "usr/sbin/powernode-init"
INIT_SCRIPT = b"""#!/usr/bin/python3
# powernode node init (PID 1): see powernode/agent/boot.py
import sys

from powernode.agent.boot import main

sys.exit(main())
"""


def agent_files() -> list[tuple[str, Path]]:
    """(path relative to the package, file) for every agent file, sorted."""
    found: list[tuple[str, Path]] = []
    for part in AGENT_PARTS:
        path = PACKAGE_ROOT / part
        if path.is_dir():
            for file in path.rglob("*"):
                if (
                    file.is_file()
                    and file.suffix in (".py", ".typed")
                    and "__pycache__" not in (file.parts)
                ):
                    found.append((file.relative_to(PACKAGE_ROOT).as_posix(), file))
        elif path.is_file():
            found.append((part, path))
    return sorted(found)


def payload_digest() -> str:
    """sha256 over the agent's files and this builder's own payload code (a cache key)."""
    digest = hashlib.sha256()
    for relative, file in agent_files():
        digest.update(relative.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    digest.update(INIT_SCRIPT)
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def add_payload(
    overlay: Overlay,
    *,
    epoch: int,
    guest_python: tuple[int, int] | None,
    work_dir: Path,
    image_doc: dict[str, object],
) -> None:
    """Add the agent, the init and /etc files to `overlay`."""
    origin = "powernode agent"
    compile_pyc = guest_python is not None and guest_python == sys.version_info[:2]
    tag = sys.implementation.cache_tag
    for relative, file in agent_files():
        path = f"{SITE}/{relative}"
        overlay.add_parents(path, origin, mtime=epoch)
        overlay.add(path, Item("file", 0o644, mtime=epoch, source=file), origin)
        if compile_pyc and file.suffix == ".py":
            pyc = work_dir / "pyc" / relative
            pyc.parent.mkdir(parents=True, exist_ok=True)
            py_compile.compile(
                str(file),
                cfile=str(pyc),
                dfile=f"/{path}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            parent, _, name = path.rpartition("/")
            target = f"{parent}/__pycache__/{name[:-3]}.{tag}.pyc"
            overlay.add_parents(target, origin, mtime=epoch)
            overlay.add(target, Item("file", 0o644, mtime=epoch, source=pyc), origin)
    init_origin = "powernode init"
    overlay.add(INIT, Item("file", 0o755, mtime=epoch, data=INIT_SCRIPT), init_origin)
    # Debian's initrd runs /sbin/init from the disk; the kernel runs /init from an initramfs.
    overlay.add(
        "usr/sbin/init", Item("symlink", 0o777, mtime=epoch, target="powernode-init"), init_origin
    )
    overlay.add("init", Item("symlink", 0o777, mtime=epoch, target=INIT), init_origin)
    overlay.add("etc/hostname", Item("file", 0o644, mtime=epoch, data=b"powernode\n"), init_origin)
    overlay.add(
        "etc/hosts",
        Item("file", 0o644, mtime=epoch, data=b"127.0.0.1 localhost\n::1 localhost\n"),
        init_origin,
    )
    overlay.add("etc/powernode", Item("dir", 0o755, mtime=epoch), init_origin)
    overlay.add(
        "etc/powernode/image.json",
        Item(
            "file",
            0o644,
            mtime=epoch,
            data=json.dumps(image_doc, indent=2, sort_keys=True).encode() + b"\n",
        ),
        init_origin,
    )
    for directory in ("var/lib/powernode", "var/log"):
        overlay.add_parents(directory + "/x", init_origin, mtime=epoch)
