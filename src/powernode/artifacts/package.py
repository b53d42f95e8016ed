"""Building a module version into an OCI artifact: config, tar+zstd layer and manifest.

Reproducible: the same name, version, spec, entries, blob contents and creation time give a
byte-identical manifest (so the same digest) on every machine with the same `zstandard`
release. Everything that could vary is fixed: entries go in sorted path order with their own
mode, owner and mtime and no user or group names; headers are POSIX ustar, with a pax header
only for what ustar cannot hold (long or non-ASCII names, large ids); zstd runs single-threaded
at `ZSTD_LEVEL`. The layer is streamed to a temporary file and hashed while it is written, so
memory use does not grow with the module's size. The reading half is `powernode.artifacts.layer`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, cast

import zstandard

from powernode.artifacts import media
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.oci import Descriptor, canonical_json, parse_manifest
from powernode.errors import Invalid
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry, check_path

ZSTD_LEVEL = 9
"""Part of the artifact's identity: changing it changes every layer digest."""
CHUNK = 1 << 20
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


@dataclass
class ModuleArtifact:
    """A built module artifact. The layer is a temporary file: `close()` (or `with`) removes it."""

    name: str
    version: str
    config: bytes
    config_descriptor: Descriptor
    layer_path: Path
    layer_descriptor: Descriptor
    manifest: bytes
    manifest_descriptor: Descriptor

    def write_layout(self, root: Path, *, tag: str | None = None) -> Descriptor:
        """Add the artifact to the OCI layout at `root` (created if needed), tagged `tag`.

        The tag defaults to `version_tag(version)`. Returns the manifest's descriptor as listed
        in `index.json`.
        """
        layout = OciLayout.create(root)
        layout.put_blob_bytes(self.config)
        with self.layer_path.open("rb") as layer:
            layout.put_blob_stream(layer, self.layer_descriptor)
        return layout.add_manifest(
            self.manifest,
            media.OCI_MANIFEST,
            tag=tag if tag is not None else version_tag(self.version),
            artifact_type=media.MODULE_ARTIFACT_TYPE,
        )

    def close(self) -> None:
        self.layer_path.unlink(missing_ok=True)

    def __enter__(self) -> ModuleArtifact:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def version_tag(version: str) -> str:
    """The OCI tag of a module version: the version, with `+` (not allowed in tags) as `_`."""
    tag = version.replace("+", "_")
    if not _TAG.match(tag):
        raise Invalid(f"version {version!r} cannot be an OCI tag (letters, digits, '._-')")
    return tag


def created_annotation(created: datetime) -> str:
    """RFC 3339 in UTC, to the second: `2024-05-01T12:00:00Z`. `created` must be aware."""
    if created.tzinfo is None or created.utcoffset() is None:
        raise Invalid("the creation time of a module artifact needs a time zone")
    return created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_module_artifact(
    *,
    name: str,
    version: str,
    spec: Mapping[str, Any],
    entries: Sequence[Entry],
    open_blob: Callable[[str], IO[bytes]],
    created: datetime,
    workdir: Path | None = None,
) -> ModuleArtifact:
    """Build the artifact of a module version; `open_blob(sha256)` opens a file's content.

    Each file's content must have the entry's size and sha256, or the build fails with
    Invalid. The layer is written to a temporary file in `workdir` (default: the system's
    temporary directory); the returned artifact owns it.
    """
    if not name or not version:
        raise Invalid("a module artifact needs a name and a version")
    config = canonical_json(dict(spec))
    config_descriptor = Descriptor.of(media.MODULE_CONFIG_MEDIA_TYPE, config)
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix="powernode-layer-", suffix=".tar.zst")
    layer_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out:
            sink = _HashingSink(out)
            write_layer(sink, entries, open_blob)
        layer_descriptor = Descriptor(
            media.MODULE_LAYER_MEDIA_TYPE, "sha256:" + sink.sha256.hexdigest(), sink.size
        )
        annotations = {
            media.ANNOTATION_TITLE: name,
            media.ANNOTATION_VERSION: version,
            media.ANNOTATION_CREATED: created_annotation(created),
            media.ANNOTATION_MODULE_NAME: name,
            media.ANNOTATION_MODULE_VERSION: version,
        }
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_MANIFEST,
                "artifactType": media.MODULE_ARTIFACT_TYPE,
                "config": config_descriptor.document(),
                "layers": [layer_descriptor.document()],
                "annotations": annotations,
            }
        )
    except BaseException:
        layer_path.unlink(missing_ok=True)
        raise
    return ModuleArtifact(
        name=name,
        version=version,
        config=config,
        config_descriptor=config_descriptor,
        layer_path=layer_path,
        layer_descriptor=layer_descriptor,
        manifest=manifest,
        manifest_descriptor=Descriptor.of(
            media.OCI_MANIFEST, manifest, artifact_type=media.MODULE_ARTIFACT_TYPE
        ),
    )


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def write_layer(
    out: Writable,
    entries: Sequence[Entry],
    open_blob: Callable[[str], IO[bytes]],
) -> None:
    """Write the tar+zstd layer of `entries` to `out` (see the module docstring)."""
    ordered = sorted(entries, key=lambda e: e.path)
    for previous, entry in itertools.pairwise(ordered):
        if previous.path == entry.path:
            raise Invalid(f"path {entry.path!r} appears twice in the module's entries")
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0, write_checksum=True)
    with compressor.stream_writer(cast("IO[bytes]", out), closefd=False) as zstd_out:
        archive = tarfile.open(  # noqa: SIM115 - closed below, before the zstd frame ends
            fileobj=cast("IO[bytes]", zstd_out),
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
        )
        with archive:
            for entry in ordered:
                _add(archive, entry, open_blob)


def _add(archive: tarfile.TarFile, entry: Entry, open_blob: Callable[[str], IO[bytes]]) -> None:
    info = tarfile.TarInfo(check_path(entry.path))
    info.mode, info.uid, info.gid, info.mtime = (
        entry.mode & 0o7777,
        entry.uid,
        entry.gid,
        entry.mtime,
    )
    info.uname = info.gname = ""
    if entry.type == DIR:
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    elif entry.type == SYMLINK:
        if not entry.target:
            raise Invalid(f"symlink {entry.path!r} has no target")
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
        archive.addfile(info)
    elif entry.type == FILE:
        if entry.sha256 is None:
            raise Invalid(f"file {entry.path!r} has no content digest")
        info.type, info.size = tarfile.REGTYPE, entry.size
        with open_blob(entry.sha256) as blob:
            content = _CheckedBlob(blob)
            try:
                archive.addfile(info, cast("IO[bytes]", content))
            except OSError as exc:  # tarfile's word for a short source
                raise Invalid(
                    f"content of {entry.path!r} is shorter than its {entry.size} bytes"
                ) from exc
            if blob.read(1) or content.sha256.hexdigest() != entry.sha256:
                raise Invalid(f"content of {entry.path!r} does not match its size and sha256")
    else:
        raise Invalid(f"entry {entry.path!r} has the unknown type {entry.type!r}")


class _CheckedBlob:
    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1, /) -> bytes:
        data = self.inner.read(size)
        self.sha256.update(data)
        return data


class _HashingSink:
    """Where the compressed layer goes: a file, with its digest and size kept as it is written."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


@dataclass(frozen=True)
class ModuleManifest:
    """What a module artifact's manifest says: who it is and where its config and layer are."""

    name: str
    version: str
    created: str
    config: Descriptor
    layer: Descriptor


def parse_module_manifest(data: bytes, *, where: str = "the manifest") -> ModuleManifest:
    """Read a module artifact's manifest; Invalid when it is not one."""
    doc = parse_manifest(data, where=where)
    if doc.get("artifactType") != media.MODULE_ARTIFACT_TYPE:
        raise Invalid(f"{where} is not a powernode module (artifactType {doc.get('artifactType')})")
    config = Descriptor.parse(doc.get("config"), where=f"{where} config")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise Invalid(f"{where} must have exactly one layer")
    layer = Descriptor.parse(layers[0], where=f"{where} layer")
    if config.media_type != media.MODULE_CONFIG_MEDIA_TYPE:
        raise Invalid(f"{where} has a config of media type {config.media_type}")
    if layer.media_type != media.MODULE_LAYER_MEDIA_TYPE:
        raise Invalid(f"{where} has a layer of media type {layer.media_type}")
    notes = doc.get("annotations") or {}
    name, version = (
        notes.get(media.ANNOTATION_MODULE_NAME),
        notes.get(media.ANNOTATION_MODULE_VERSION),
    )
    if not isinstance(name, str) or not isinstance(version, str):
        raise Invalid(f"{where} does not name its module and version")
    created = notes.get(media.ANNOTATION_CREATED, "")
    return ModuleManifest(name, version, str(created), config, layer)
