"""Reading a module tree from a tar stream into the content store.

The CLI packs a directory as tar (module.toml first, when present) and the server reads it here
without extracting anything to disk: member metadata becomes entries, file contents go straight
into the content store. `file_spec` decides which members the module contributes, with rsync's
walk semantics (a member under an excluded directory is not contributed), and it decides first:
a member it excludes is never refused, whatever its type or name.

A refused import leaves the database untouched (nothing is recorded before the whole tree has
been read), but file contents stored before the refusal stay in the content store. That is
harmless: blobs are named by their content, so a later import of the same bytes reuses them,
and deleting them here could pull a blob from under a concurrent import that shares it.
"""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, TypedDict

from powernode.errors import Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry, check_path, parents
from powernode.modules.filters import FilterRules
from powernode.modules.spec import ModuleSpec, load_module_toml
from powernode.modules.store import ContentStore
from powernode.modules.verity import fsverity_digest_file

MODULE_TOML = "module.toml"
FIELDS = "fields"
DEFAULT = "default"


class ModuleFields(NamedTuple):
    """What a module.toml holds: optional name and version, and the spec."""

    name: str | None
    version: str | None
    spec: ModuleSpec


@dataclass(frozen=True)
class ImportedTree:
    name: str | None
    version: str | None
    spec: ModuleSpec
    entries: list[Entry]
    spec_source: str = DEFAULT
    """Where the spec came from: MODULE_TOML, FIELDS (the API) or DEFAULT (neither)."""


def shown(path: str) -> str:
    """`path` printable: bytes that are not UTF-8 (kept by tarfile as surrogates) as `\\xNN`."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _member_path(member: tarfile.TarInfo) -> str | None:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return None
    return check_path(name)


def _check_utf8(path: str, member: tarfile.TarInfo) -> None:
    """Entry lists and manifests are JSON text: names must be UTF-8 (tar keeps raw bytes)."""
    for text, what in ((path, "its name"), (member.linkname, "its link target")):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid(
                f"{shown(path)}: {what} is not valid UTF-8 ('{shown(text)}'); module paths and "
                "link targets must be UTF-8: rename it, or exclude it with file_spec",
                path=shown(path),
            ) from None


def _read_toml(archive: tarfile.TarFile, member: tarfile.TarInfo) -> ModuleFields:
    handle = archive.extractfile(member)
    if handle is None:
        raise Invalid("module.toml in the archive is not a regular file")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODULE_TOML
        path.write_bytes(handle.read())
        return ModuleFields(*load_module_toml(path))


def _agree(toml: ModuleFields, fields: ModuleFields) -> None:
    """Refuse a spec given twice, in module.toml and as API fields, unless both say the same."""
    pairs = (("name", toml.name, fields.name), ("version", toml.version, fields.version))
    differing = [
        key
        for key, ours, theirs in pairs
        if ours is not None and theirs is not None and ours != theirs
    ]
    differing += [
        key
        for key in ModuleSpec.model_fields
        if getattr(toml.spec, key) != getattr(fields.spec, key)
    ]
    if differing:
        raise Invalid(
            "the archive's module.toml and the spec parameter differ in "
            + ", ".join(differing)
            + "; give the spec in one place only (or make both the same)",
            keys=differing,
        )


def read_tree(
    stream: IO[bytes],
    store: ContentStore,
    *,
    fields: ModuleFields | None,
    preserve_owner: bool,
) -> ImportedTree:
    """Entries of the tar in `stream`; a top-level module.toml, if any, must come first.

    `fields` is the spec given beside the archive (API fields); a module.toml must agree with it.
    A seekable `stream` lets a hard link refer to a file that `file_spec` excludes.
    """
    found = fields
    source = DEFAULT if fields is None else FIELDS
    entries: dict[str, Entry] = {}
    # Random access when we can: a hard link can then read an excluded target's content.
    random_access = stream.seekable()
    reader = _Reader(store, preserve_owner, random_access=random_access)
    rules: FilterRules | None = None
    try:
        if random_access:
            archive = tarfile.open(fileobj=stream, mode="r:*")  # noqa: SIM115 - closed below
        else:
            archive = tarfile.open(fileobj=stream, mode="r|*")  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise _unreadable(exc) from exc
    try:
        with archive:
            for member in archive:
                path = _member_path(member)
                if path is None:
                    continue
                if path == MODULE_TOML:
                    if rules is not None:
                        raise Invalid("module.toml must be the first member of the archive")
                    toml = _read_toml(archive, member)
                    if fields is not None:
                        _agree(toml, fields)
                    found, source = toml, MODULE_TOML
                    continue
                if rules is None:
                    spec = found.spec if found is not None else ModuleSpec()
                    rules = FilterRules.parse(spec.file_spec, source="file_spec")
                if not rules.selects(path, member.isdir()):
                    reader.skip(member, path)
                    continue
                _check_utf8(path, member)
                entries[path] = reader.entry(archive, member, path, entries)
    except tarfile.TarError as exc:
        raise _unreadable(exc) from exc
    _add_missing_parents(entries)
    return ImportedTree(
        name=found.name if found is not None else None,
        version=found.version if found is not None else None,
        spec=found.spec if found is not None else ModuleSpec(),
        entries=sorted(entries.values(), key=lambda e: e.path),
        spec_source=source,
    )


def _unreadable(exc: tarfile.TarError) -> Invalid:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Invalid(
        f"the module tree is not a readable tar archive (plain, gzip, bzip2 or xz): {reason}"
    )


class _Meta(TypedDict):
    path: str
    mode: int
    uid: int
    gid: int
    mtime: int


class _Reader:
    """Turns selected tar members into entries, storing file contents."""

    def __init__(self, store: ContentStore, preserve_owner: bool, *, random_access: bool) -> None:
        self.store = store
        self.preserve_owner = preserve_owner
        self.random_access = random_access
        self.skipped: dict[str, tarfile.TarInfo] = {}
        """Regular files `file_spec` excluded, by path: a selected hard link may refer to one."""

    def skip(self, member: tarfile.TarInfo, path: str) -> None:
        if member.isreg():
            self.skipped[path] = member

    def entry(
        self,
        archive: tarfile.TarFile,
        member: tarfile.TarInfo,
        path: str,
        seen: dict[str, Entry],
    ) -> Entry:
        uid, gid = (member.uid, member.gid) if self.preserve_owner else (0, 0)
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
            return self._hard_link(archive, member, path, seen, meta)
        if member.isreg():
            return self._file(archive, member, meta)
        raise Invalid(
            f"{path} is a device, fifo or socket; modules hold files, directories and symlinks "
            "(exclude it with file_spec)",
            path=path,
        )

    def _file(self, archive: tarfile.TarFile, member: tarfile.TarInfo, meta: _Meta) -> Entry:
        handle = archive.extractfile(member)
        assert handle is not None  # a regular member always has content
        sha, size = self.store.put_stream(handle)
        verity = fsverity_digest_file(self.store.path(sha))
        return Entry(type=FILE, size=size, sha256=sha, verity=verity, **meta)

    def _hard_link(
        self,
        archive: tarfile.TarFile,
        member: tarfile.TarInfo,
        path: str,
        seen: dict[str, Entry],
        meta: _Meta,
    ) -> Entry:
        target = _link_path(member.linkname)
        earlier = seen.get(target)
        if earlier is not None and earlier.type == FILE:
            return Entry(
                type=FILE, size=earlier.size, sha256=earlier.sha256, verity=earlier.verity, **meta
            )
        excluded = self.skipped.get(target)
        if earlier is None and excluded is not None:
            if not self.random_access:
                raise Invalid(
                    f"{path} is a hard link to {target}, which file_spec excludes; the archive "
                    "arrived as a stream that cannot be read again: send it uncompressed or "
                    "select the link's target too",
                    path=path,
                )
            # Random access: read the excluded target's content now, which the walk skipped.
            return self._file(archive, excluded, meta)
        raise Invalid(
            f"{path} is a hard link to {member.linkname}, which is not a file before it",
            path=path,
        )


def _link_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _add_missing_parents(entries: dict[str, Entry]) -> None:
    """Archives without directory members still give every file a parent directory entry.

    A member under a non-directory (`a` a symlink or file, then `a/b`) is refused: such a tree
    cannot be materialized, and through a symlink it would write outside the module.
    """
    for entry in list(entries.values()):
        for parent in parents(entry.path):
            found = entries.get(parent)
            if found is None:
                entries[parent] = Entry(
                    path=parent, type=DIR, mode=0o755, uid=0, gid=0, mtime=entry.mtime
                )
            elif found.type != DIR:
                raise Invalid(
                    f"{entry.path!r} lies under {parent!r}, which is a {found.type}, not a "
                    "directory; a module is a tree: remove one of the two",
                    field="tree",
                )
