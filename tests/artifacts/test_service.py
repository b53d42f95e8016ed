"""The control plane's artifact store and signature service on both databases: artifacts built
once and recorded for good, what an upload must be, and `require_trusted`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import IO

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select, update

from powernode.artifacts import service
from powernode.artifacts.models import ModuleArtifact
from powernode.artifacts.oci import Descriptor, canonical_json, digest_hex
from powernode.artifacts.package import build_module_artifact
from powernode.artifacts.signing import KeySigner, Rejection, SignatureRejected, sign_manifest
from powernode.artifacts.store import ArtifactInfo, VersionRef, ensure_artifact, find_version
from powernode.artifacts.trust import UntrustedArtifact, public_key_pem
from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.errors import Category, Conflict, Invalid
from powernode.events.log import EventContext
from powernode.modules.importer import ImportedTree
from powernode.modules.service import record_version
from powernode.modules.spec import ModuleSpec
from powernode.modules.store import ContentStore
from tests.artifacts.factories import module_entries

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
CLOCK = FrozenClock(NOW)
CTX = EventContext(actor="test", clock=CLOCK)


class CountingStore(ContentStore):
    """A real content store that counts the layers put into it (one per build)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.streams = 0

    def put_stream(self, source: IO[bytes], *, expected: str | None = None) -> tuple[str, int]:
        self.streams += 1
        return super().put_stream(source, expected=expected)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "content")


async def add_version(
    db: Database, store: ContentStore, name: str = "web", version: str = "1.0"
) -> VersionRef:
    tree = ImportedTree(name, version, ModuleSpec(description="test"), module_entries(store))
    async with db.transaction() as session:
        await record_version(session, CTX, store, name=name, version=version, tree=tree)
    found = await find_version(db, name, version)
    assert found is not None
    return found


async def artifact_rows(db: Database) -> int:
    async with db.read_sessions() as session:
        count = await session.scalar(select(func.count()).select_from(ModuleArtifact))
    return count or 0


async def test_concurrent_callers_in_one_process_build_once(
    database: Database, store: CountingStore
) -> None:
    """Eight callers at once: one build, one row, one answer, the digest a local build gives."""
    ref = await add_version(database, store)
    results = await asyncio.gather(
        *(ensure_artifact(database, store, ref, CLOCK) for _ in range(8))
    )
    assert len(set(results)) == 1
    assert store.streams == 1
    assert await artifact_rows(database) == 1
    with build_module_artifact(
        name="web",
        version="1.0",
        spec=ref.spec,
        entries=module_entries(store),
        open_blob=store.open,
        created=ref.created_at,
    ) as local:
        assert results[0].manifest_digest == local.manifest_descriptor.digest
        assert results[0].layer_size == local.layer_descriptor.size
    for digest in (results[0].manifest_digest, results[0].config_digest, results[0].layer_digest):
        assert store.has(digest_hex(digest))


async def test_two_processes_racing_agree_on_the_first_recorded_row(
    database: Database, tmp_path: Path
) -> None:
    """Two stores stand for two replicas (no shared lock): both build, one row is written
    and both answer with it."""
    first, second = ContentStore(tmp_path / "a"), ContentStore(tmp_path / "b")
    ref = await add_version(database, first)
    module_entries(second)  # the same file contents in the other replica's store
    second.put_bytes(first.read_bytes(ref.entries_sha256))
    results = await asyncio.gather(
        ensure_artifact(database, first, ref, CLOCK), ensure_artifact(database, second, ref, CLOCK)
    )
    assert results[0] == results[1]
    assert await artifact_rows(database) == 1


async def test_lost_blobs_are_rebuilt_to_the_recorded_digest(
    database: Database, store: CountingStore
) -> None:
    ref = await add_version(database, store)
    built = await ensure_artifact(database, store, ref, CLOCK)
    store.path(digest_hex(built.layer_digest)).unlink()
    assert await ensure_artifact(database, store, ref, CLOCK) == built
    assert store.has(digest_hex(built.layer_digest))
    assert store.streams == 2


async def test_a_rebuild_that_disagrees_with_the_record_is_a_conflict(
    database: Database, store: CountingStore
) -> None:
    """The recorded digest is the artifact's for good: a build giving another one (another
    zstd, say) is refused rather than served."""
    ref = await add_version(database, store)
    built = await ensure_artifact(database, store, ref, CLOCK)
    other = "sha256:" + "e" * 64
    async with database.transaction() as session:
        await session.execute(update(ModuleArtifact).values(manifest_digest=other))
    with pytest.raises(Conflict, match="rebuilds as"):
        await ensure_artifact(database, store, ref, CLOCK)
    assert built.manifest_digest != other


def test_uploads_are_cosign_signatures_of_the_artifact() -> None:
    """Both flavours pass; another digest, a stray blob, an index or a bare image do not."""
    subject = "sha256:" + "a" * 64
    bundle = sign_manifest(
        subject, "modules/web", KeySigner(ec.generate_private_key(ec.SECP256R1())), now=NOW
    )
    tag = bundle.tag_artifact()
    referrer = bundle.referrer_artifact(
        Descriptor("application/vnd.oci.image.manifest.v1+json", subject, 10)
    )
    assert service.check_upload(tag.manifest, tag.blobs, subject, now=NOW) == "tag"
    assert service.check_upload(referrer.manifest, referrer.blobs, subject, now=NOW) == "referrer"
    with pytest.raises(SignatureRejected) as other:
        service.check_upload(tag.manifest, tag.blobs, "sha256:" + "b" * 64, now=NOW)
    assert other.value.reason == Rejection.OTHER_DIGEST
    with pytest.raises(Invalid, match="not referenced"):
        service.check_upload(
            tag.manifest, {**tag.blobs, "sha256:" + "c" * 64: b"x"}, subject, now=NOW
        )
    index = canonical_json({"schemaVersion": 2, "manifests": []})
    with pytest.raises(Invalid, match="not an index"):
        service.check_upload(index, {}, subject, now=NOW)
    image = json.loads(tag.manifest)
    image["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
    with pytest.raises(SignatureRejected) as bare:
        service.check_upload(canonical_json(image), tag.blobs, subject, now=NOW)
    assert bare.value.reason == Rejection.MALFORMED


async def test_require_trusted_refuses_with_reasons_and_allows_a_trusted_signature(
    database: Database, store: CountingStore
) -> None:
    """No policy: refused, saying to set one; a policy and no signature: refused; a pinned
    key's signature: allowed."""
    ref = await add_version(database, store)
    async with database.read_sessions() as session:
        with pytest.raises(UntrustedArtifact) as unset:
            await service.require_trusted(session, store, "web", "1.0")
    assert unset.value.category == Category.FORBIDDEN
    assert "has no trust policy" in unset.value.detail
    assert unset.value.extra["reasons"] == service.unset_policy_decision("web").reasons
    key = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    async with database.transaction() as session:
        await service.put_policy(
            session, CTX, "web", {"public_keys": [public_key_pem(key.public_key)]}
        )
    async with database.read_sessions() as session:
        with pytest.raises(UntrustedArtifact, match="there are no signatures"):
            await service.require_trusted(session, store, "web", "1.0")
    info: ArtifactInfo = await ensure_artifact(database, store, ref, CLOCK)
    signed = sign_manifest(info.manifest_digest, "modules/web", key, now=NOW).tag_artifact()
    async with database.transaction() as session:
        await service.add_signature(
            session,
            CTX,
            store,
            version_id=ref.id,
            name="web",
            version="1.0",
            subject=info.manifest_digest,
            manifest=signed.manifest,
            blobs=signed.blobs,
        )
    async with database.read_sessions() as session:
        decision = await service.require_trusted(session, store, "web", "1.0")
    assert decision.allowed
    assert decision.signer is not None
    assert decision.signer.startswith("key sha256:")
