"""Reading a module tree from a tar stream into the content store.

The CLI packs a directory as tar (module.toml first, when present) and the server reads it here
without extracting anything to disk: member metadata becomes entries, file contents go straight
into the content store. `file_spec` decides which members the module contributes, with rsync's
walk semantics (a member under an excluded directory is not contributed).
"""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypedDict

from powernode.errors import Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry, check_path, parents
from powernode.modules.filters import FilterRules
from powernode.modules.spec import ModuleSpec, load_module_toml
from powernode.modules.store import ContentStore
from powernode.modules.verity import fsverity_digest_file

MODULE_TOML = "module.toml"


@dataclass(frozen=True)
class ImportedTree:
    name: str | None
    version: str | None
    spec: ModuleSpec
    entries: list[Entry]


def _member_path(member: tarfile.TarInfo) -> str | None:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return None
    return check_path(name)


def _read_toml(
    archive: tarfile.TarFile, member: tarfile.TarInfo
) -> tuple[str | None, str | None, ModuleSpec]:
    handle = archive.extractfile(member)
    if handle is None:
        raise Invalid("module.toml in the archive is not a regular file")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODULE_TOML
        path.write_bytes(handle.read())
        return load_module_toml(path)


def read_tree(
    stream: IO[bytes], store: ContentStore, *, spec: ModuleSpec | None, preserve_owner: bool
) -> ImportedTree:
    """Entries of the tar in `stream`; a top-level module.toml, if any, must come first."""
    name = version = None
    entries: dict[str, Entry] = {}
    rules: FilterRules | None = None
    try:
        archive = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise Invalid(f"the module tree is not a readable tar archive: {exc}") from exc
    with archive:
        for member in archive:
            path = _member_path(member)
            if path is None:
                continue
            if path == MODULE_TOML:
                if entries:
                    raise Invalid("module.toml must be the first member of the archive")
                name, version, from_toml = _read_toml(archive, member)
                spec = spec or from_toml
                continue
            if rules is None:
                spec = spec or ModuleSpec()
                rules = FilterRules.parse(spec.file_spec, source="file_spec")
            entry = _entry(archive, member, path, store, entries, preserve_owner)
            if rules.selects(path, entry.type == DIR):
                entries[path] = entry
    spec = spec or ModuleSpec()
    _add_missing_parents(entries)
    return ImportedTree(
        name=name,
        version=version,
        spec=spec,
        entries=sorted(entries.values(), key=lambda e: e.path),
    )


class _Meta(TypedDict):
    path: str
    mode: int
    uid: int
    gid: int
    mtime: int


def _entry(
    archive: tarfile.TarFile,
    member: tarfile.TarInfo,
    path: str,
    store: ContentStore,
    seen: dict[str, Entry],
    preserve_owner: bool,
) -> Entry:
    uid, gid = (member.uid, member.gid) if preserve_owner else (0, 0)
    meta: _Meta = {
        "path": path,
        "mode": member.mode & 0o7777,
        "uid": uid,
        "gid": gid,
        "mtime": int(member.mtime),
    }
    if member.isdir():
        return Entry(type=DIR, **meta)
    if member.issym():
        return Entry(type=SYMLINK, target=member.linkname, size=len(member.linkname), **meta)
    if member.islnk():  # a hard link to an earlier member: same content
        earlier = seen.get(_link_path(member.linkname))
        if earlier is None or earlier.type != FILE:
            raise Invalid(
                f"{path} is a hard link to {member.linkname}, which is not a file before it"
            )
        return Entry(
            type=FILE, size=earlier.size, sha256=earlier.sha256, verity=earlier.verity, **meta
        )
    if member.isreg():
        handle = archive.extractfile(member)
        assert handle is not None
        sha, size = store.put_stream(handle)
        verity = fsverity_digest_file(store.path(sha))
        return Entry(type=FILE, size=size, sha256=sha, verity=verity, **meta)
    raise Invalid(
        f"{path} is a device, fifo or socket; modules hold files, directories and symlinks"
    )


def _link_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _add_missing_parents(entries: dict[str, Entry]) -> None:
    """Archives without directory members still give every file a parent directory entry."""
    for entry in list(entries.values()):
        for parent in parents(entry.path):
            if parent not in entries:
                entries[parent] = Entry(
                    path=parent, type=DIR, mode=0o755, uid=0, gid=0, mtime=entry.mtime
                )
