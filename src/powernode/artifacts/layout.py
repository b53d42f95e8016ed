"""OCI image layout directories: `oci-layout`, `index.json` and `blobs/sha256/<hex>`.

Tools such as skopeo, oras and crane read and write the same layout (`oci:DIR:TAG`). A tag is
the `org.opencontainers.image.ref.name` annotation of a descriptor in `index.json`; untagged
descriptors there (signatures, other referrers) keep their manifests reachable.

Concurrency contract: blobs are written to a temporary file and renamed into place, so a reader
never sees a partial blob and writers of the same blob do not disturb each other. `index.json`
is replaced atomically, but read-modify-write is not locked: one writer per layout at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from powernode.artifacts.media import ANNOTATION_REF_NAME, OCI_INDEX, OCI_LAYOUT_VERSION
from powernode.artifacts.oci import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    canonical_json,
    check_digest,
    digest_hex,
    index_descriptors,
    parse_manifest,
)
from powernode.errors import Invalid, NotFound

CHUNK = 1 << 20


class OciLayout:
    """One OCI image layout directory; create it with `create`, open one with `open`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(cls, root: Path) -> OciLayout:
        """Create (or reuse) a layout at `root`; an existing layout keeps what it holds."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = root / "oci-layout"
        if marker.exists():
            return cls.open(root)
        _atomic_write(marker, canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
        if not (root / "index.json").exists():
            _atomic_write(root / "index.json", _index_bytes([]))
        return cls(root)

    @classmethod
    def open(cls, root: Path) -> OciLayout:
        """The layout at `root`; NotFound or Invalid when it is missing or not a layout."""
        try:
            marker = json.loads((root / "oci-layout").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"{root} is not an OCI image layout (no oci-layout file)") from None
        except ValueError:
            raise Invalid(f"{root}/oci-layout is not JSON") from None
        if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != OCI_LAYOUT_VERSION:
            raise Invalid(f"{root} is not an OCI image layout version {OCI_LAYOUT_VERSION}")
        return cls(root)

    # blobs

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the OCI layout {self.root}") from None

    def read_blob(self, digest: str, *, max_size: int = MAX_MANIFEST_SIZE) -> bytes:
        """A small blob's bytes (a manifest, a config), checked against its digest."""
        with self.open_blob(digest) as handle:
            data = handle.read(max_size + 1)
        if len(data) > max_size:
            raise Invalid(f"blob {digest} in {self.root} is larger than {max_size} bytes")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise Invalid(f"blob {digest} in {self.root} does not match its digest")
        return data

    def put_blob_bytes(self, data: bytes) -> str:
        """Store `data`; returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            self._commit(digest, lambda out: out.write(data))
        return digest

    def put_blob_stream(self, source: IO[bytes], descriptor: Descriptor) -> None:
        """Store what `source` yields; Invalid unless it has the descriptor's digest and size."""
        if self.has_blob(descriptor.digest):
            return

        def copy(out: IO[bytes]) -> None:
            sha, size = hashlib.sha256(), 0
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > descriptor.size:
                    break
                sha.update(chunk)
                out.write(chunk)
            if size != descriptor.size or "sha256:" + sha.hexdigest() != descriptor.digest:
                raise Invalid(
                    f"blob {descriptor.digest} ({descriptor.size} bytes) was given other content"
                )

        self._commit(descriptor.digest, copy)

    def new_blob_file(self) -> Path:
        """An empty temporary file among the blobs, to be filled and then `commit_blob`-ed."""
        folder = self.root / "blobs" / "sha256"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".incoming-")
        os.close(fd)
        return Path(tmp)

    def commit_blob(self, tmp: Path, digest: str) -> None:
        """Move a filled `new_blob_file` into place as blob `digest` (the caller checked it)."""
        os.chmod(tmp, 0o444)
        os.replace(tmp, self.blob_path(digest))

    def _commit(self, digest: str, write: Callable[[IO[bytes]], object]) -> None:
        tmp = self.new_blob_file()
        try:
            with tmp.open("wb") as out:
                write(out)
            self.commit_blob(tmp, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # index

    def manifests(self) -> list[Descriptor]:
        """The descriptors `index.json` lists, in order."""
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{self.root} is not an OCI image layout (no index.json)") from None
        return index_descriptors(data, f"{self.root}/index.json")

    def tags(self) -> dict[str, Descriptor]:
        """Tag -> descriptor, for the tagged descriptors of `index.json`."""
        found = {}
        for desc in self.manifests():
            tag = desc.annotations.get(ANNOTATION_REF_NAME)
            if tag is not None:
                found[tag] = desc
        return found

    def resolve(self, ref: str) -> Descriptor:
        """The descriptor of a tag, or of a digest listed in `index.json`; NotFound if none."""
        if ref.startswith("sha256:"):
            check_digest(ref)
            for desc in self.manifests():
                if desc.digest == ref:
                    return desc
        elif (desc_for_tag := self.tags().get(ref)) is not None:
            return desc_for_tag
        raise NotFound(f"{ref!r} is not in the OCI layout {self.root}")

    def add_manifest(
        self,
        data: bytes,
        media_type: str,
        *,
        tag: str | None = None,
        artifact_type: str | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Store a manifest and list it in `index.json`, tagged or not; idempotent.

        A tag already on another manifest moves to this one (as skopeo does). An untagged
        manifest is listed once, however often it is added.
        """
        parse_manifest(data, where="the manifest to add")
        digest = self.put_blob_bytes(data)
        notes = dict(annotations or {})
        if tag is not None:
            notes[ANNOTATION_REF_NAME] = tag
        new = Descriptor(media_type, digest, len(data), notes, artifact_type)
        current = self.manifests()
        kept = [d for d in current if not _replaced_by(d, new)]
        if new in kept:
            return new
        self._write_index([*kept, new])
        return new

    def _write_index(self, manifests: list[Descriptor]) -> None:
        _atomic_write(self.root / "index.json", _index_bytes(manifests))


def _replaced_by(old: Descriptor, new: Descriptor) -> bool:
    """Whether `new` takes `old`'s place in the index: same tag, or same untagged manifest."""
    tag = new.annotations.get(ANNOTATION_REF_NAME)
    old_tag = old.annotations.get(ANNOTATION_REF_NAME)
    if tag is not None:
        return old_tag == tag and old != new
    return old_tag is None and old.digest == new.digest and old != new


def _index_bytes(manifests: list[Descriptor]) -> bytes:
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [d.document() for d in manifests],
        }
    )


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
