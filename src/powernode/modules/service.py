"""Module service: import versions into the content store, list and show them, and compose
templates from them.

Module versions are immutable, so their entry lists are cached in memory by digest: a live
template preview re-reads nothing it has seen before.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.db.pagination import Page, paginate
from powernode.errors import Conflict, Invalid, NotFound
from powernode.events.log import EventContext, record_event
from powernode.modules.compose import Composition, compose
from powernode.modules.entries import FILE, Entry, decode_entries, encode_entries
from powernode.modules.footprint import Footprint
from powernode.modules.importer import MODULE_TOML, ImportedTree, ModuleFields, read_tree
from powernode.modules.models import Module, ModuleVersion
from powernode.modules.resolve import check_distinct_versions, resolve
from powernode.modules.spec import ModuleSpec, module_from_json, parse_version, version_key
from powernode.modules.store import ContentStore
from powernode.templates.models import Template

NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,98}[a-z0-9])?$"


class ModuleVersionOut(BaseModel):
    name: str
    version: str
    spec: dict[str, Any]
    entries_sha256: str
    file_count: int
    total_bytes: int
    created_at: dt.datetime
    created_by: str


class ModuleOut(BaseModel):
    id: uuid.UUID
    name: str
    versions: list[str]
    created_at: dt.datetime


def version_out(module: Module, row: ModuleVersion) -> ModuleVersionOut:
    return ModuleVersionOut(
        name=module.name,
        version=row.version,
        spec=row.spec,
        entries_sha256=row.entries_sha256,
        file_count=row.file_count,
        total_bytes=row.total_bytes,
        created_at=row.created_at,
        created_by=row.created_by,
    )


SPEC_FIELD = "the spec parameter"


def parse_spec_field(text: str | None) -> ModuleFields | None:
    """The import API's `spec` field (JSON with module.toml's keys), validated; None if absent."""
    if text is None:
        return None
    return ModuleFields(*module_from_json(text, source=SPEC_FIELD))


def read_upload(
    stream: IO[bytes],
    store: ContentStore,
    *,
    name: str,
    version: str,
    preserve_owner: bool,
    fields: ModuleFields | None = None,
) -> ImportedTree:
    """Blocking part of an import (hashing, storing): run it in a worker thread.

    `fields` is the spec given as API fields; the tree's module.toml, if any, must agree.
    """
    tree = read_tree(stream, store, fields=fields, preserve_owner=preserve_owner)
    where = "module.toml" if tree.spec_source == MODULE_TOML else SPEC_FIELD
    if tree.name is not None and tree.name != name:
        raise Invalid(f"{where} names module {tree.name!r}, but the import is for {name!r}")
    if tree.version is not None and tree.version != version:
        raise Invalid(f"{where} says version {tree.version}, but the import is for {version}")
    return tree


async def _same_version(session: AsyncSession, module_id: uuid.UUID, version: str) -> str | None:
    """The version of the module equal to `version` under PEP 440, as it was written."""
    found: str | None = await session.scalar(
        select(ModuleVersion.version).where(
            ModuleVersion.module_id == module_id,
            ModuleVersion.version_key == version_key(version),
        )
    )
    return found


def _exists(name: str, version: str, existing: str) -> Conflict:
    same = "" if existing == version else f", which is the same PEP 440 version as {version}"
    return Conflict(
        f"module {name}@{existing} already exists{same}; versions are immutable, "
        "import a new version instead",
        existing_version=existing,
    )


async def check_new_version(session: AsyncSession, name: str, version: str) -> None:
    """Conflict early, before a large upload is read, when `version` is taken already.

    Only a courtesy: `record_version` checks again, the database's unique index decides.
    """
    parse_version(version)
    module_id = await session.scalar(select(Module.id).where(Module.name == name))
    if module_id is not None and (existing := await _same_version(session, module_id, version)):
        raise _exists(name, version, existing)


async def _module_for_import(
    session: AsyncSession, name: str, description: str, now: dt.datetime
) -> Module:
    module = await session.scalar(select(Module).where(Module.name == name))
    if module is not None:
        return module
    module = Module(name=name, description=description, created_at=now)
    try:
        async with session.begin_nested():  # a concurrent first import may create it too
            session.add(module)
    except IntegrityError:
        found = await session.scalar(select(Module).where(Module.name == name))
        if found is None:
            raise
        return found
    return module


async def record_version(
    session: AsyncSession,
    ctx: EventContext,
    store: ContentStore,
    *,
    name: str,
    version: str,
    tree: ImportedTree,
) -> tuple[Module, ModuleVersion]:
    """Register an imported tree as module `name` at `version` (immutable once recorded).

    Refuses a version equal under PEP 440 to one the module has (`1.1` vs `1.1.0`); the unique
    index on (module, version key) settles two imports racing for it.
    """
    key = version_key(version)
    now = ctx.clock.now()
    module = await _module_for_import(session, name, tree.spec.description, now)
    if existing := await _same_version(session, module.id, version):
        raise _exists(name, version, existing)
    files = [e for e in tree.entries if e.type == FILE]
    entries_sha = store.put_bytes(encode_entries(tree.entries))
    row = ModuleVersion(
        module_id=module.id,
        version=version,
        version_key=key,
        spec=tree.spec.model_dump(mode="json"),
        entries_sha256=entries_sha,
        file_count=len(files),
        total_bytes=sum(e.size for e in files),
        created_at=now,
        created_by=ctx.actor,
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = await _same_version(session, module.id, version)
        if existing is None:
            raise
        raise _exists(name, version, existing) from None
    await record_event(
        session,
        ctx,
        kind="module.imported",
        subject_type="module_version",
        subject_id=row.id,
        payload={
            "name": name,
            "version": version,
            "files": row.file_count,
            "bytes": row.total_bytes,
            "entries_sha256": entries_sha,
        },
    )
    return module, row


async def list_modules(session: AsyncSession, *, limit: int, cursor: str | None) -> Page[Module]:
    return await paginate(session, select(Module), Module.id, limit=limit, cursor=cursor)


async def versions_of(
    session: AsyncSession, module_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    rows = await session.execute(
        select(ModuleVersion.module_id, ModuleVersion.version).where(
            ModuleVersion.module_id.in_(module_ids)
        )
    )
    result: dict[uuid.UUID, list[str]] = {i: [] for i in module_ids}
    for module_id, version in rows:
        result[module_id].append(version)
    for versions in result.values():
        versions.sort(key=parse_version)
    return result


async def get_version(
    session: AsyncSession, name: str, version: str
) -> tuple[Module, ModuleVersion]:
    """The version of module `name` equal to `version` under PEP 440 (`1.1.0` finds `1.1`), as
    templates resolve it."""
    try:
        key = version_key(version)
    except Invalid:
        raise NotFound(f"module {name}@{version} does not exist") from None
    row = await session.execute(
        select(Module, ModuleVersion)
        .join(ModuleVersion, ModuleVersion.module_id == Module.id)
        .where(Module.name == name, ModuleVersion.version_key == key)
    )
    found = row.first()
    if found is None:
        raise NotFound(f"module {name}@{version} does not exist")
    return found[0], found[1]


class EntryCache:
    """Decoded entry lists by (store, digest), least recently used evicted first.

    Bounded by the number of entries held rather than of lists: one list may hold 100,000
    entries. Entry lists are immutable, so a cached list is never stale. Not thread-safe; the
    event loop is its only user.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._lists: OrderedDict[tuple[str, str], tuple[Entry, ...]] = OrderedDict()
        self._held = 0

    def get(self, store: ContentStore, digest: str) -> tuple[Entry, ...]:
        key = (str(store.root), digest)
        found = self._lists.get(key)
        if found is not None:
            self._lists.move_to_end(key)
            return found
        entries = tuple(decode_entries(store.read_bytes(digest)))
        self._lists[key] = entries
        self._held += len(entries)
        while self._held > self.max_entries and len(self._lists) > 1:
            _, evicted = self._lists.popitem(last=False)
            self._held -= len(evicted)
        return entries

    def clear(self) -> None:
        self._lists.clear()
        self._held = 0


_ENTRY_CACHE = EntryCache()


def entries_of(store: ContentStore, digest: str) -> tuple[Entry, ...]:
    """A version's entries; immutable, so cached by digest."""
    return _ENTRY_CACHE.get(store, digest)


@dataclass(frozen=True)
class CatalogVersion:
    name: str
    version: str
    spec: ModuleSpec
    entries_sha256: str


class DbCatalog:
    """Every imported module version, as the resolver sees them (versions as written).

    Like `MemoryCatalog`, refuses two PEP 440-equal versions of one module; the database's
    unique version key keeps them out, so this only guards against rows written around it.
    """

    def __init__(self, rows: list[CatalogVersion]) -> None:
        self._by_name: dict[str, dict[str, CatalogVersion]] = {}
        for row in rows:
            self._by_name.setdefault(row.name, {})[row.version] = row
        for name, versions in self._by_name.items():
            check_distinct_versions(name, versions)

    def versions(self, name: str) -> list[str]:
        return list(self._by_name.get(name, {}))

    def spec(self, name: str, version: str) -> ModuleSpec:
        return self.row(name, version).spec

    def row(self, name: str, version: str) -> CatalogVersion:
        try:
            return self._by_name[name][version]
        except KeyError:
            raise NotFound(f"module {name}@{version} does not exist") from None


async def load_catalog(session: AsyncSession) -> DbCatalog:
    rows = await session.execute(
        select(
            Module.name, ModuleVersion.version, ModuleVersion.spec, ModuleVersion.entries_sha256
        ).join(ModuleVersion, ModuleVersion.module_id == Module.id)
    )
    return DbCatalog([CatalogVersion(n, v, ModuleSpec.from_stored(s), d) for n, v, s, d in rows])


async def compose_template(
    session: AsyncSession, store: ContentStore, template: Template
) -> Composition:
    """Resolve the template's modules and stack their trees."""
    refs = [(m.module_name, m.module_version) for m in template.modules]
    catalog = await load_catalog(session)
    resolved = resolve(refs, catalog)
    layers = []
    for module in resolved:
        row = catalog.row(module.name, module.version)
        layers.append((module, list(entries_of(store, row.entries_sha256))))
    return compose(layers)


class LayerOut(BaseModel):
    name: str
    version: str
    explicit: bool
    required_by: list[str]


class ConflictOut(BaseModel):
    path: str
    lower: str
    upper: str
    difference: str


class PreviewOut(BaseModel):
    """What composing a template would give: the layers, every conflict, the footprint."""

    template: str
    layers: list[LayerOut]
    conflicts: list[ConflictOut]
    footprint: Footprint


def preview_document(template: Template, composition: Composition) -> PreviewOut:
    return PreviewOut(
        template=template.name,
        layers=[
            LayerOut(
                name=layer.name,
                version=str(layer.version),
                explicit=bool(getattr(layer, "explicit", True)),
                required_by=list(getattr(layer, "required_by", [])),
            )
            for layer in composition.layers
        ],
        conflicts=[ConflictOut(**c.document()) for c in composition.conflicts],
        footprint=composition.footprint(),
    )


def manifest_document(template: Template, composition: Composition) -> dict[str, Any]:
    """The composed tree, deterministic: refused while the template has conflicts."""
    if composition.conflicts:
        first = composition.conflicts[0]
        raise Conflict(
            f"template {template.name} has {len(composition.conflicts)} conflict(s), e.g. "
            f"{first.path}: {first.lower} vs {first.upper} ({first.difference}); see its preview",
            conflicts=len(composition.conflicts),
        )
    return {
        "template": template.name,
        "modules": [
            {"name": layer.name, "version": str(layer.version)} for layer in composition.layers
        ],
        "entries": [e.document() for e in composition.sorted_entries()],
    }
