"""Module trees and artifacts for the tests, built from real files in a content store.

Run as a script (`python -m tests.artifacts.factories WORKDIR`) it builds the default
artifact in WORKDIR and prints its manifest digest: the reproducibility test runs it in other
processes and compares.
"""

from __future__ import annotations

import datetime
import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from powernode.artifacts.package import ModuleArtifact, build_module_artifact
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.store import ContentStore

CREATED = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)
MTIME = 1_714_564_800
LONG_NAME = "usr/share/powernode/" + "a-rather-long-directory-name/" * 4 + "file.conf"


def noise(seed: str, size: int) -> bytes:
    """`size` bytes that look random (incompressible) and are the same every time."""
    blocks = (hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(size // 32 + 1))
    return b"".join(blocks)[:size]


DEFAULT_FILES: Mapping[str, bytes] = {
    "etc/powernode/agent.conf": b"[agent]\nserver = https://control.example\n",
    "etc/motd": b"managed by powernode\n",
    "usr/bin/tool": b"#!/bin/sh\necho tool\n",
    "usr/share/caf\u00e9/menu.txt": b"non-ASCII path\n",
    LONG_NAME: b"long path\n",
}


def module_entries(
    store: ContentStore,
    files: Mapping[str, bytes] | None = None,
    *,
    symlinks: Mapping[str, str] | None = None,
    mode: int = 0o644,
) -> list[Entry]:
    """Entries for `files` (path -> content) and `symlinks`, with every parent directory."""
    files = DEFAULT_FILES if files is None else files
    symlinks = {"usr/bin/tool-link": "tool", "etc/localtime": "/usr/share/zoneinfo/UTC"} | dict(
        symlinks or {}
    )
    entries: dict[str, Entry] = {}
    for path in [*files, *symlinks]:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            entries[parent] = Entry(parent, DIR, 0o755, 0, 0, mtime=MTIME)
    for path, data in files.items():
        sha = store.put_bytes(data)
        file_mode = 0o755 if path.startswith("usr/bin/") else mode
        entries[path] = Entry(path, FILE, file_mode, 0, 0, len(data), MTIME + 1, sha)
    for path, target in symlinks.items():
        entries[path] = Entry(path, SYMLINK, 0o777, 0, 0, len(target), MTIME + 2, target=target)
    return sorted(entries.values(), key=lambda e: e.path)


def build(
    store: ContentStore,
    *,
    name: str = "web",
    version: str = "1.0",
    spec: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    workdir: Path | None = None,
    **entry_kwargs: Any,
) -> ModuleArtifact:
    """A module artifact; keyword overrides change its name, version, spec or tree."""
    return build_module_artifact(
        name=name,
        version=version,
        spec=spec if spec is not None else {"name": name, "version": version, "packages": []},
        entries=module_entries(store, files, **entry_kwargs),
        open_blob=store.open,
        created=CREATED,
        workdir=workdir,
    )


def main(workdir: Path) -> None:
    store = ContentStore(workdir / "content")
    with build(store, workdir=workdir) as artifact:
        print(artifact.manifest_descriptor.digest, artifact.layer_descriptor.digest)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
