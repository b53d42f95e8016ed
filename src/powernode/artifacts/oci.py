"""OCI descriptors, digests and the canonical JSON every powernode manifest is written in.

Canonical JSON is UTF-8 with sorted keys and no insignificant whitespace, so the same document
gives the same bytes, and so the same digest, on every machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from powernode.errors import Invalid

SHA256_PREFIX = "sha256:"
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
MAX_MANIFEST_SIZE = 4 << 20
"""Manifests and indexes larger than this are refused (registries use the same limit)."""


def canonical_json(document: Any) -> bytes:
    """`document` as canonical JSON bytes: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def sha256_digest(data: bytes) -> str:
    """The OCI digest (`sha256:<hex>`) of `data`."""
    return SHA256_PREFIX + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """`digest` if it is a `sha256:<64 hex>` digest, else Invalid; no other algorithm is used."""
    if not _DIGEST.match(digest):
        raise Invalid(f"{digest!r} is not a sha256 digest (sha256: and 64 lower case hex digits)")
    return digest


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest."""
    return check_digest(digest)[len(SHA256_PREFIX) :]


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob or manifest is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def document(self) -> dict[str, Any]:
        """The descriptor as the JSON object OCI documents hold."""
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type is not None:
            doc["artifactType"] = self.artifact_type
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return doc

    @classmethod
    def parse(cls, doc: Any, *, where: str = "descriptor") -> Descriptor:
        """A descriptor from its JSON object; Invalid naming `where` when it is malformed."""
        if not isinstance(doc, dict):
            raise Invalid(f"{where} is not a JSON object")
        media_type, digest, size = doc.get("mediaType"), doc.get("digest"), doc.get("size")
        annotations = doc.get("annotations") or {}
        artifact_type = doc.get("artifactType")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise Invalid(f"{where} lacks a mediaType or digest string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise Invalid(f"{where} has no valid size")
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise Invalid(f"{where} has annotations that are not a string map")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise Invalid(f"{where} has an artifactType that is not a string")
        check_digest(digest)
        return cls(media_type, digest, size, annotations, artifact_type)

    @classmethod
    def of(cls, media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
        """The descriptor of the blob or manifest `data`."""
        return cls(media_type, sha256_digest(data), len(data), **kwargs)


def parse_manifest(data: bytes, *, where: str) -> dict[str, Any]:
    """A manifest or index document from its bytes; Invalid naming `where` when malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"{where} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise Invalid(f"{where} is not a schemaVersion 2 manifest or index")
    return doc


def manifest_children(doc: Mapping[str, Any], *, where: str) -> tuple[list[Descriptor], bool]:
    """The descriptors a manifest or index refers to, and whether it is an index.

    For an index: its manifests. For a manifest: its config, then its layers. The `subject` is
    not a child: it is pushed and pulled on its own.
    """
    if "manifests" in doc:
        items = doc["manifests"]
        if not isinstance(items, list):
            raise Invalid(f"{where}: manifests is not a list")
        return [
            Descriptor.parse(d, where=f"{where} manifests[{i}]") for i, d in enumerate(items)
        ], True
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise Invalid(f"{where}: layers is not a list")
    children = [Descriptor.parse(doc.get("config"), where=f"{where} config")]
    children += [Descriptor.parse(d, where=f"{where} layers[{i}]") for i, d in enumerate(layers)]
    return children, False


def media_type_of(doc: Mapping[str, Any], default: str) -> str:
    """The `mediaType` a manifest document declares, or `default`."""
    value = doc.get("mediaType")
    return value if isinstance(value, str) else default


def artifact_type_of(doc: Mapping[str, Any], *, fallback: bool = True) -> str | None:
    """A manifest's `artifactType`; else, with `fallback`, its config's media type (unless
    that is the empty config), as the referrers API reports it."""
    value = doc.get("artifactType")
    if isinstance(value, str):
        return value
    config = doc.get("config")
    if not fallback:
        return None
    if isinstance(config, dict) and isinstance(config.get("mediaType"), str):
        found = str(config["mediaType"])
        return None if found == "application/vnd.oci.empty.v1+json" else found
    return None


def annotations_of(doc: Mapping[str, Any]) -> dict[str, str]:
    """A manifest's annotations, the string ones only."""
    notes = doc.get("annotations")
    if not isinstance(notes, dict):
        return {}
    return {k: v for k, v in notes.items() if isinstance(k, str) and isinstance(v, str)}


def index_descriptors(data: bytes, where: str) -> list[Descriptor]:
    """The descriptors an index lists (`manifests`); Invalid naming `where` when malformed."""
    doc = parse_manifest(data, where=where)
    items = doc.get("manifests") or []
    if not isinstance(items, list):
        raise Invalid(f"{where}: manifests is not a list")
    return [Descriptor.parse(d, where=f"{where} manifests[{i}]") for i, d in enumerate(items)]
