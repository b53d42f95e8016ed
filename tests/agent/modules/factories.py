"""Signed module artifacts, hand-made evil layers, payloads and tree snapshots for the tests.

Good artifacts are built with `build_module_artifact` from real files in a content store; evil
ones get a layer crafted with `tarfile` and `zstandard` (the builder refuses to make them) and
are then signed by the trusted publisher all the same: the layer reader must refuse them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from powernode.agent.modules.activate import ActivationOptions
from powernode.agent.modules.apply import ApplyOptions, ApplyResult, apply_modules
from powernode.agent.modules.postcheck import PostCheck
from powernode.agent.modules.request import parse_request
from powernode.agent.modules.verify import Limits
from powernode.artifacts import media
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.oci import Descriptor, canonical_json
from powernode.artifacts.package import build_module_artifact
from powernode.artifacts.signing import Signer, sign_manifest, signature_tag
from powernode.artifacts.trust import public_key_pem
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.store import ContentStore

CREATED = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
MTIME = 1_714_564_800
OCI_MANIFEST = media.OCI_MANIFEST


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Published:
    """A module artifact in an OCI layout: where, its tag and manifest digest."""

    layout: Path
    name: str
    version: str
    digest: str

    @property
    def reference(self) -> str:
        return f"oci:{self.layout}:{self.version}"


def entries_for(
    store: ContentStore,
    files: Mapping[str, bytes],
    *,
    symlinks: Mapping[str, str] | None = None,
    dirs: Mapping[str, int] | None = None,
    modes: Mapping[str, int] | None = None,
) -> list[Entry]:
    """Entries for `files`, `symlinks` and `dirs` (path -> mode), with every parent directory."""
    found: dict[str, Entry] = {}
    paths = [*files, *(symlinks or {}), *(dirs or {})]
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            found[parent] = Entry(parent, DIR, 0o755, 0, 0, mtime=MTIME)
    for path, mode in (dirs or {}).items():
        found[path] = Entry(path, DIR, mode, 0, 0, mtime=MTIME + 3)
    for path, data in files.items():
        mode = (modes or {}).get(path, 0o644)
        found[path] = Entry(path, FILE, mode, 0, 0, len(data), MTIME + 1, store.put_bytes(data))
    for path, target in (symlinks or {}).items():
        found[path] = Entry(path, SYMLINK, 0o777, 0, 0, len(target), MTIME + 2, target=target)
    return sorted(found.values(), key=lambda e: e.path)


def publish(
    store: ContentStore,
    layout: Path,
    signer: Signer | None,
    *,
    name: str,
    version: str = "1.0",
    files: Mapping[str, bytes] | None = None,
    symlinks: Mapping[str, str] | None = None,
    dirs: Mapping[str, int] | None = None,
    modes: Mapping[str, int] | None = None,
    signed_at: dt.datetime | None = None,
) -> Published:
    """Build a module artifact into `layout` (tag = version) and sign it (both flavours)."""
    files = {f"etc/{name}.conf": f"{name} {version}\n".encode()} if files is None else files
    with build_module_artifact(
        name=name,
        version=version,
        spec={"description": f"{name} for tests", "packages": []},
        entries=entries_for(store, files, symlinks=symlinks, dirs=dirs, modes=modes),
        open_blob=store.open,
        created=CREATED,
        workdir=store.root.parent,
    ) as artifact:
        desc = artifact.write_layout(layout, tag=version)
    if signer is not None:
        sign(layout, desc.digest, signer, at=signed_at)
    return Published(layout, name, version, desc.digest)


def publish_layer(
    layout: Path, signer: Signer, layer: bytes, *, name: str, version: str = "1.0"
) -> Published:
    """A module artifact whose layer is `layer` as given (however evil), signed by `signer`."""
    target = OciLayout.create(layout)
    config = canonical_json({"description": "hand-made", "packages": []})
    config_desc = Descriptor.of(media.MODULE_CONFIG_MEDIA_TYPE, config)
    layer_desc = Descriptor.of(media.MODULE_LAYER_MEDIA_TYPE, layer)
    target.put_blob_bytes(config)
    target.put_blob_bytes(layer)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": media.MODULE_ARTIFACT_TYPE,
            "config": config_desc.document(),
            "layers": [layer_desc.document()],
            "annotations": {
                media.ANNOTATION_TITLE: name,
                media.ANNOTATION_VERSION: version,
                media.ANNOTATION_CREATED: "2024-05-01T12:00:00Z",
                media.ANNOTATION_MODULE_NAME: name,
                media.ANNOTATION_MODULE_VERSION: version,
            },
        }
    )
    desc = target.add_manifest(
        manifest, OCI_MANIFEST, tag=version, artifact_type=media.MODULE_ARTIFACT_TYPE
    )
    sign(layout, desc.digest, signer)
    return Published(layout, name, version, desc.digest)


def sign(
    layout: Path,
    digest: str,
    signer: Signer,
    *,
    at: dt.datetime | None = None,
    over: str | None = None,
) -> None:
    """Add a signature of `digest` to the layout: a referrer and the `.sig` tag.

    `over`: the signature's payload names this other digest instead (only the `.sig` tag
    flavour is written then, as a referrer's subject must be what it signs).
    """
    target = OciLayout.open(layout)
    bundle = sign_manifest(over or digest, "tests/modules", signer, now=at or now())
    artifacts = [bundle.tag_artifact()]
    if over is None:
        artifacts.append(bundle.referrer_artifact(target.resolve(digest)))
    for artifact in artifacts:
        for blob in artifact.blobs.values():
            target.put_blob_bytes(blob)
        tag = signature_tag(digest) if artifact.tag is not None else None
        target.add_manifest(artifact.manifest, OCI_MANIFEST, tag=tag)


def evil_layer(members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar+zstd layer holding exactly `members` (info, content), nothing checked."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor(level=3).compress(raw.getvalue())


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    data: bytes | None = None,
    mode: int = 0o644,
    linkname: str = "",
) -> tuple[tarfile.TarInfo, bytes | None]:
    """One tar member for `evil_layer`."""
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, MTIME, linkname
    if kind == tarfile.REGTYPE and data is None:
        data = b"content\n"
    return info, data


def policy_for(*signers: Any, identities: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """A trust policy document pinning the signers' public keys and trusting `identities`."""
    return {
        "identities": [{"identity": i, "issuer": s} for i, s in identities],
        "public_keys": [public_key_pem(s.public_key) for s in signers],
    }


def module_doc(published: Published, policy: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """One `modules[]` item of an apply_modules payload; any field can be overridden."""
    doc: dict[str, Any] = {
        "name": published.name,
        "version": published.version,
        "reference": published.reference,
        "digest": published.digest,
        "policy": dict(policy),
    }
    doc.update(overrides)
    return doc


def snapshot(path: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under `path` (not following links) with type, mode, owner and content hash."""
    found: dict[str, tuple[Any, ...]] = {}
    if not os.path.lexists(path):
        return found
    root = os.path.realpath(path)
    for directory, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = os.path.join(directory, name)
            info = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(info.st_mode):
                content: str = "-> " + os.readlink(full)
            elif stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            else:
                content = "dir"
            found[rel] = (content, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    return found


def state_snapshot(state: Path) -> dict[str, Any]:
    """The active root, the `current` link and the generations present: what must not change."""
    modules = state / "modules"
    link = modules / "current"
    generations = modules / "generations"
    return {
        "current": os.readlink(link) if os.path.lexists(link) else None,
        "generations": sorted(p.name for p in generations.iterdir())
        if generations.is_dir()
        else [],
        "root": snapshot(link / "root"),
    }


async def apply(
    state: Path,
    modules: Sequence[Mapping[str, Any]],
    *,
    overlay: bool = True,
    activation: ActivationOptions | None = None,
    limits: Limits | None = None,
    check: PostCheck | None = None,
    **payload: Any,
) -> ApplyResult:
    """Run apply_modules on a payload built from `modules` and any other payload fields;
    `check` is a Python post-check (the payload's `post_check` is an argv); `activation`
    replaces `overlay` when given."""
    request = parse_request({"modules": [dict(m) for m in modules], **payload})
    activation = activation or ActivationOptions(overlay=overlay)
    options = ApplyOptions(activation=activation, limits=limits or Limits())
    return await apply_modules(state, request, options, post_check=check)
