"""The registry client: push an OCI layout to a registry, pull one from it, with referrers.

`RegistryClient` is async (the agent); `push_layout` and `pull` at module level are thin sync
wrappers for the CLI: each runs its own event loop, so call them from sync code only. The
protocol itself (authentication, blobs, manifests, referrers, error mapping) is
`powernode.artifacts.distribution`.

Pushing sends blobs before the manifests that name them, children before their index, and a
manifest's referrers (the layout's untagged manifests whose `subject` it is: signatures) after
it. Pulling verifies every blob and manifest against its digest while streaming it into the
layout, and lists a manifest in `index.json` only once everything it names is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from powernode.artifacts.auth import Credentials
from powernode.artifacts.distribution import DistributionClient
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.media import ANNOTATION_REF_NAME
from powernode.artifacts.oci import Descriptor, manifest_children, parse_manifest
from powernode.artifacts.reference import Reference, parse_reference
from powernode.artifacts.transport import Body, DigestMismatch
from powernode.errors import NotFound

__all__ = [
    "Credentials",
    "DigestMismatch",
    "PushResult",
    "Reference",
    "RegistryClient",
    "parse_reference",
    "pull",
    "push_layout",
]


@dataclass
class PushResult:
    """What a push did: the manifest's digest, and each blob by what became of it."""

    reference: Reference
    digest: str
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    referrers: list[str] = field(default_factory=list)


class RegistryClient(DistributionClient):
    """An OCI registry client; see `DistributionClient` for the protocol operations."""

    async def push_layout(
        self,
        layout_dir: Path,
        ref: Reference,
        *,
        mount_from: Sequence[str] = (),
        referrers: bool = True,
    ) -> PushResult:
        """Push the manifest `ref` names in the layout (by its tag, else its digest) to `ref`.

        Blobs the repository has are skipped; `mount_from` lists repositories of the same
        registry to mount blobs from before uploading them.
        """
        layout = OciLayout.open(layout_dir)
        root = layout.resolve(ref.identifier)
        target = ref if ref.tag is not None else ref.with_digest(root.digest)
        result = PushResult(replace(target, digest=root.digest), root.digest)
        await self._push_manifest(layout, target, root, result, tuple(mount_from))
        if referrers:
            for desc in layout.manifests():
                if ANNOTATION_REF_NAME in desc.annotations or desc.digest == root.digest:
                    continue
                doc = parse_manifest(layout.read_blob(desc.digest), where=f"manifest {desc.digest}")
                subject = doc.get("subject")
                if isinstance(subject, dict) and subject.get("digest") == root.digest:
                    by_digest = ref.with_digest(desc.digest)
                    await self._push_manifest(layout, by_digest, desc, result, tuple(mount_from))
                    result.referrers.append(desc.digest)
        return result

    async def _push_manifest(
        self,
        layout: OciLayout,
        ref: Reference,
        desc: Descriptor,
        result: PushResult,
        mount_from: tuple[str, ...],
    ) -> None:
        data = layout.read_blob(desc.digest)
        where = f"manifest {desc.digest} in {layout.root}"
        children, is_index = manifest_children(parse_manifest(data, where=where), where=where)
        for child in children:
            if is_index:
                child_ref = ref.with_digest(child.digest)
                await self._push_manifest(layout, child_ref, child, result, mount_from)
                continue
            if not layout.has_blob(child.digest):
                raise NotFound(f"blob {child.digest} of {where} is not in the layout")
            body = Body(path=layout.blob_path(child.digest), length=child.size)
            outcome = await self.upload_blob(ref, child, body, mount_from=mount_from)
            by_outcome = {"uploaded": result.uploaded, "mounted": result.mounted}
            by_outcome.get(outcome, result.existing).append(child.digest)
        await self.put_manifest(ref, data, desc.media_type)

    async def pull(
        self, ref: Reference, dest_layout_dir: Path, *, referrers: bool = True
    ) -> Descriptor:
        """Pull `ref` into the layout at `dest_layout_dir` (created if needed), tagged `ref.tag`.

        With `referrers`, the manifests referring to it (signatures) come too, untagged.
        Returns the pulled manifest's descriptor as `index.json` lists it.
        """
        layout = OciLayout.create(dest_layout_dir)
        data, desc = await self.get_manifest(ref)
        await self._pull_children(layout, ref, data, desc)
        listed = layout.add_manifest(
            data, desc.media_type, tag=ref.tag, artifact_type=desc.artifact_type
        )
        if referrers:
            for referrer in await self.referrers(ref, desc.digest):
                by_digest = ref.with_digest(referrer.digest)
                ref_data, ref_desc = await self.get_manifest(by_digest)
                await self._pull_children(layout, by_digest, ref_data, ref_desc)
                layout.add_manifest(
                    ref_data,
                    ref_desc.media_type,
                    artifact_type=ref_desc.artifact_type,
                    annotations=referrer.annotations,
                )
        return listed

    async def _pull_children(
        self, layout: OciLayout, ref: Reference, data: bytes, desc: Descriptor
    ) -> None:
        where = f"manifest {desc.digest} of {ref.where}"
        children, is_index = manifest_children(parse_manifest(data, where=where), where=where)
        for child in children:
            if layout.has_blob(child.digest):
                continue
            if is_index:
                child_ref = ref.with_digest(child.digest)
                child_data, child_desc = await self.get_manifest(child_ref)
                await self._pull_children(layout, child_ref, child_data, child_desc)
                layout.put_blob_bytes(child_data)
                continue
            tmp = layout.new_blob_file()
            try:
                await self.fetch_blob(ref, child, tmp)
                layout.commit_blob(tmp, child.digest)
            finally:
                tmp.unlink(missing_ok=True)


def _client_for(
    ref: Reference, credentials: Credentials | None, chunk_size: int | None
) -> RegistryClient:
    logins = {ref.registry: credentials} if credentials is not None else None
    return RegistryClient(credentials=logins, chunk_size=chunk_size)


def push_layout(
    layout_dir: Path,
    ref: str | Reference,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    chunk_size: int | None = None,
    mount_from: Sequence[str] = (),
    referrers: bool = True,
) -> PushResult:
    """Sync `RegistryClient.push_layout`; `insecure` means plain HTTP."""
    target = ref if isinstance(ref, Reference) else parse_reference(ref, insecure=insecure)

    async def run() -> PushResult:
        async with _client_for(target, credentials, chunk_size) as client:
            return await client.push_layout(
                layout_dir, target, mount_from=mount_from, referrers=referrers
            )

    return asyncio.run(run())


def pull(
    ref: str | Reference,
    dest_layout_dir: Path,
    *,
    credentials: Credentials | None = None,
    insecure: bool = False,
    referrers: bool = True,
) -> Descriptor:
    """Sync `RegistryClient.pull`; `insecure` means plain HTTP."""
    source = ref if isinstance(ref, Reference) else parse_reference(ref, insecure=insecure)

    async def run() -> Descriptor:
        async with _client_for(source, credentials, None) as client:
            return await client.pull(source, dest_layout_dir, referrers=referrers)

    return asyncio.run(run())
