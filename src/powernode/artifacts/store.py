"""The control plane's registry: module artifacts built on first need into the content store,
and the manifests, blobs, tags and referrers `/v2` serves from it.

A version's artifact is built (`package.build_module_artifact`, created = the version's
`created_at`, so the digest is the one `powernode artifact build` gives anywhere) the first time
something needs it: a pull by tag, a signature upload. Its config, layer and manifest go into the
content store, whose names are sha256 hex, so `sha256:<hex>` is always the store path `<hex>`;
the `module_artifacts` row then fixes the digest for good, even if a later build would differ.

Concurrency contract: builds run in a worker thread (a module may be gigabytes). Within one
process a per-version `asyncio.Lock` lets one request build while the others wait for it; across
processes the unique `module_version_id` decides: the first row written wins and a loser uses
it (its blobs are content-addressed, so writing them twice is harmless). Rows are read and
written in short transactions of their own, never while a caller holds the database's write
lock.

Lookups are scoped to the repository `modules/<name>`: a digest of another module is unknown.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from powernode.artifacts import media
from powernode.artifacts.models import ModuleArtifact, ModuleSignature
from powernode.artifacts.oci import (
    Descriptor,
    annotations_of,
    artifact_type_of,
    canonical_json,
    check_digest,
    digest_hex,
    manifest_children,
    media_type_of,
    parse_manifest,
)
from powernode.artifacts.package import build_module_artifact, version_tag
from powernode.artifacts.signing import signature_tag
from powernode.clock import Clock
from powernode.db.crud import as_conflict
from powernode.db.engine import Database
from powernode.errors import Conflict, Invalid, NotFound
from powernode.modules.entries import decode_entries
from powernode.modules.models import Module, ModuleVersion
from powernode.modules.store import ContentStore

REPOSITORY_PREFIX = "modules/"
_SIG_TAG = re.compile(r"^sha256-([a-f0-9]{64})\.sig$")


class NameUnknown(NotFound):
    registry_code: ClassVar[str] = "NAME_UNKNOWN"


class ManifestUnknown(NotFound):
    registry_code: ClassVar[str] = "MANIFEST_UNKNOWN"


class BlobUnknown(NotFound):
    registry_code: ClassVar[str] = "BLOB_UNKNOWN"


class DigestInvalid(Invalid):
    registry_code: ClassVar[str] = "DIGEST_INVALID"


@dataclass(frozen=True)
class VersionRef:
    """What building a version's artifact needs to know about it."""

    id: uuid.UUID
    name: str
    version: str
    spec: dict[str, Any]
    entries_sha256: str
    created_at: dt.datetime


@dataclass(frozen=True)
class ArtifactInfo:
    manifest_digest: str
    config_digest: str
    layer_digest: str
    layer_size: int


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    data: bytes


_VERSION_COLUMNS = (
    ModuleVersion.id,
    Module.name,
    ModuleVersion.version,
    ModuleVersion.spec,
    ModuleVersion.entries_sha256,
    ModuleVersion.created_at,
)
_PerVersion = ModuleArtifact | ModuleSignature
_locks: weakref.WeakValueDictionary[tuple[str, uuid.UUID], asyncio.Lock] = (
    weakref.WeakValueDictionary()
)


# building


async def ensure_artifact(
    db: Database, store: ContentStore, version: VersionRef, clock: Clock
) -> ArtifactInfo:
    """The version's artifact, built and recorded first if it is not yet (see the docstring)."""
    found = await _artifact_of(db, version.id)
    if found is not None and _present(store, found):
        return found
    lock = _locks.setdefault((str(store.root), version.id), asyncio.Lock())
    async with lock:
        found = await _artifact_of(db, version.id)
        if found is not None and _present(store, found):
            return found
        built = await asyncio.to_thread(_build, store, version)
        if found is not None:  # recorded, but the blobs are gone: the rebuild must agree
            if built != found:
                raise Conflict(
                    f"the artifact of {version.name}@{version.version} was recorded as "
                    f"{found.manifest_digest} but rebuilds as {built.manifest_digest}"
                )
            return found
        return await _record(db, version.id, built, clock)


def _build(store: ContentStore, version: VersionRef) -> ArtifactInfo:
    """Blocking: build the artifact and put its blobs into the store."""
    entries = decode_entries(store.read_bytes(version.entries_sha256))
    workdir = store.root / "build"
    workdir.mkdir(parents=True, exist_ok=True)
    with build_module_artifact(
        name=version.name,
        version=version.version,
        spec=version.spec,
        entries=entries,
        open_blob=store.open,
        created=version.created_at,
        workdir=workdir,
    ) as artifact:
        store.put_bytes(artifact.config)
        with artifact.layer_path.open("rb") as layer:
            store.put_stream(layer, expected=digest_hex(artifact.layer_descriptor.digest))
        store.put_bytes(artifact.manifest)
        return ArtifactInfo(
            artifact.manifest_descriptor.digest,
            artifact.config_descriptor.digest,
            artifact.layer_descriptor.digest,
            artifact.layer_descriptor.size,
        )


async def _record(
    db: Database, version_id: uuid.UUID, built: ArtifactInfo, clock: Clock
) -> ArtifactInfo:
    try:
        async with db.transaction() as session:
            session.add(
                ModuleArtifact(
                    module_version_id=version_id,
                    manifest_digest=built.manifest_digest,
                    config_digest=built.config_digest,
                    layer_digest=built.layer_digest,
                    layer_size=built.layer_size,
                    created_at=clock.now(),
                )
            )
    except IntegrityError as exc:  # another process recorded it first: its row counts
        winner = await _artifact_of(db, version_id)
        if winner is None:
            raise as_conflict(exc) from exc
        return winner
    return built


async def _artifact_of(db: Database, version_id: uuid.UUID) -> ArtifactInfo | None:
    async with db.read_sessions() as session:
        row = await session.scalar(
            select(ModuleArtifact).where(ModuleArtifact.module_version_id == version_id)
        )
    if row is None:
        return None
    return ArtifactInfo(row.manifest_digest, row.config_digest, row.layer_digest, row.layer_size)


def _present(store: ContentStore, info: ArtifactInfo) -> bool:
    digests = (info.manifest_digest, info.config_digest, info.layer_digest)
    return all(store.has(digest_hex(d)) for d in digests)


async def find_version(db: Database, name: str, version: str) -> VersionRef | None:
    async with db.read_sessions() as session:
        row = (
            await session.execute(
                select(*_VERSION_COLUMNS)
                .join(Module, Module.id == ModuleVersion.module_id)
                .where(Module.name == name, ModuleVersion.version == version)
            )
        ).first()
    return None if row is None else VersionRef(*row)


# reading, as /v2 does


async def manifest(
    db: Database, store: ContentStore, clock: Clock, name: str, reference: str
) -> Manifest:
    """The manifest a tag (`version_tag`, or `sha256-<hex>.sig`) or a digest names."""
    if reference.startswith("sha256:"):
        digest = _digest(reference)
        if not await _owned_manifest(db, name, digest):
            raise ManifestUnknown(f"manifest {digest} is not in {REPOSITORY_PREFIX}{name}")
        return _read_manifest(store, digest)
    if (match := _SIG_TAG.match(reference)) is not None:
        return await _signature_tag(db, store, name, "sha256:" + match.group(1))
    versions = await _versions(db, name, ManifestUnknown)
    for version in versions:
        if _tag_of(version.version) == reference:
            info = await ensure_artifact(db, store, version, clock)
            return _read_manifest(store, info.manifest_digest)
    raise ManifestUnknown(f"module {name} has no version tagged {reference!r}")


async def blob_size(db: Database, store: ContentStore, clock: Clock, name: str, digest: str) -> int:
    """The size of a blob of the repository (of an artifact or of a signature), once it is
    in the content store; BlobUnknown for any other digest."""
    digest = _digest(digest)
    async with db.read_sessions() as session:
        row = (
            await session.execute(
                _in_module(select(*_VERSION_COLUMNS), name, ModuleArtifact).where(
                    or_(
                        ModuleArtifact.manifest_digest == digest,
                        ModuleArtifact.config_digest == digest,
                        ModuleArtifact.layer_digest == digest,
                    )
                )
            )
        ).first()
    if row is not None:
        await ensure_artifact(db, store, VersionRef(*row), clock)  # rebuilds lost blobs
    elif digest not in await _signature_blobs(db, store, name):
        raise BlobUnknown(f"blob {digest} is not in {REPOSITORY_PREFIX}{name}")
    try:
        return store.path(digest_hex(digest)).stat().st_size
    except FileNotFoundError:
        raise BlobUnknown(f"blob {digest} of {REPOSITORY_PREFIX}{name} is missing") from None


async def referrers(
    db: Database, store: ContentStore, name: str, digest: str, artifact_type: str | None
) -> bytes:
    """The OCI 1.1 image index of the signatures whose subject is `digest`."""
    digest = _digest(digest)
    await _versions(db, name, NameUnknown)
    async with db.read_sessions() as session:
        signatures = await session.scalars(
            _in_module(select(ModuleSignature.digest), name, ModuleSignature, ModuleArtifact)
            .where(ModuleArtifact.manifest_digest == digest, ModuleSignature.flavour == "referrer")
            .order_by(ModuleSignature.created_at, ModuleSignature.id)
        )
        digests = list(signatures)
    descriptors = []
    for signature in digests:
        data = store.read_bytes(digest_hex(signature))
        doc = parse_manifest(data, where=f"signature {signature}")
        kind = artifact_type_of(doc)
        if artifact_type is None or kind == artifact_type:
            descriptors.append(
                Descriptor(
                    media_type_of(doc, media.OCI_MANIFEST),
                    signature,
                    len(data),
                    annotations_of(doc),
                    kind,
                ).document()
            )
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": descriptors}
    return canonical_json(index)


async def tags(db: Database, name: str) -> list[str]:
    """Every version's tag, and the `.sig` tag of each artifact with a tag-flavour signature."""
    found = {_tag_of(v.version) for v in await _versions(db, name, NameUnknown)}
    async with db.read_sessions() as session:
        signed = await session.scalars(
            _in_module(
                select(ModuleArtifact.manifest_digest), name, ModuleArtifact, ModuleSignature
            ).where(ModuleSignature.flavour == "tag")
        )
        found |= {signature_tag(digest) for digest in signed}
    return sorted(tag for tag in found if tag)


# helpers


def _in_module(statement: Any, name: str, *tables: type[_PerVersion]) -> Any:
    """`statement` over module `name`'s versions, joined with each of `tables`."""
    statement = statement.select_from(ModuleVersion).join(
        Module, (Module.id == ModuleVersion.module_id) & (Module.name == name)
    )
    for table in tables:
        statement = statement.join(table, table.module_version_id == ModuleVersion.id)
    return statement


def _digest(text: str) -> str:
    try:
        return check_digest(text)
    except Invalid as exc:
        raise DigestInvalid(exc.detail) from None


def _tag_of(version: str) -> str:
    try:
        return version_tag(version)
    except Invalid:
        return ""  # a version no tag can name is reachable by digest only


def _read_manifest(store: ContentStore, digest: str) -> Manifest:
    try:
        data = store.read_bytes(digest_hex(digest))
    except NotFound:
        raise ManifestUnknown(f"manifest {digest} is missing from the content store") from None
    media_type = media_type_of(parse_manifest(data, where=digest), media.OCI_MANIFEST)
    return Manifest(digest, media_type, data)


async def _versions(db: Database, name: str, missing: type[NotFound]) -> list[VersionRef]:
    async with db.read_sessions() as session:
        rows = (await session.execute(_in_module(select(*_VERSION_COLUMNS), name))).all()
    if not rows:
        raise missing(f"module {name} does not exist")
    return sorted((VersionRef(*row) for row in rows), key=lambda v: v.created_at)


async def _owned_manifest(db: Database, name: str, digest: str) -> bool:
    """Whether `digest` is an artifact or a signature manifest of module `name`."""
    artifacts = _in_module(select(ModuleArtifact.id), name, ModuleArtifact).where(
        ModuleArtifact.manifest_digest == digest
    )
    signatures = _in_module(select(ModuleSignature.id), name, ModuleSignature).where(
        ModuleSignature.digest == digest
    )
    async with db.read_sessions() as session:
        for statement in (artifacts, signatures):
            if await session.scalar(statement.limit(1)) is not None:
                return True
    return False


async def _signature_tag(db: Database, store: ContentStore, name: str, subject: str) -> Manifest:
    """The latest tag-flavour signature of the artifact `subject`: a tag moves to the newest
    push, as in a registry (cosign appends earlier layers to the manifest it uploads)."""
    async with db.read_sessions() as session:
        latest = await session.scalar(
            _in_module(select(ModuleSignature.digest), name, ModuleSignature, ModuleArtifact)
            .where(ModuleArtifact.manifest_digest == subject, ModuleSignature.flavour == "tag")
            .order_by(ModuleSignature.created_at.desc(), ModuleSignature.id.desc())
            .limit(1)
        )
    if latest is None:
        raise ManifestUnknown(f"{signature_tag(subject)} is not in {REPOSITORY_PREFIX}{name}")
    return _read_manifest(store, latest)


async def _signature_blobs(db: Database, store: ContentStore, name: str) -> set[str]:
    """The digests of every signature manifest of module `name` and of the blobs they hold."""
    async with db.read_sessions() as session:
        statement = _in_module(select(ModuleSignature.digest), name, ModuleSignature)
        digests = list(await session.scalars(statement))
    found = set(digests)
    for digest in digests:
        doc = parse_manifest(store.read_bytes(digest_hex(digest)), where=digest)
        found |= {child.digest for child in manifest_children(doc, where=digest)[0]}
    return found
