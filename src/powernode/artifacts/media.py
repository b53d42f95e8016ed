"""Media types and annotation keys of powernode module artifacts (OCI image spec 1.1).

A module version is an OCI image manifest whose `artifactType` and config media type are
`MODULE_ARTIFACT_TYPE`; its config blob is the module spec as canonical JSON and its one layer
is the module tree as a zstd-compressed tar.
"""

from __future__ import annotations

from typing import Final

MODULE_ARTIFACT_TYPE: Final = "application/vnd.powernode.module.v1+json"
"""The manifest's `artifactType`, and the media type of its config blob (the module spec)."""
MODULE_CONFIG_MEDIA_TYPE: Final = MODULE_ARTIFACT_TYPE
MODULE_LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
"""The one layer: the module tree as tar, compressed with zstd."""

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY_JSON: Final = "application/vnd.oci.empty.v1+json"
"""The media type of the `{}` config blob artifacts without a config use (signatures)."""
OCI_LAYOUT_VERSION: Final = "1.0.0"

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"

INDEX_MEDIA_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
"""Manifests whose `manifests` list other manifests (rather than `config` and `layers`)."""
MANIFEST_MEDIA_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST, *INDEX_MEDIA_TYPES})
"""Everything the registry client asks for and accepts as a manifest."""

ANNOTATION_TITLE: Final = "org.opencontainers.image.title"
"""Manifest annotation: the module name."""
ANNOTATION_VERSION: Final = "org.opencontainers.image.version"
"""Manifest annotation: the module version."""
ANNOTATION_CREATED: Final = "org.opencontainers.image.created"
"""Manifest annotation: creation time, RFC 3339 in UTC to the second (`2024-05-01T12:00:00Z`)."""
ANNOTATION_REF_NAME: Final = "org.opencontainers.image.ref.name"
"""Index annotation in an OCI layout: the tag a manifest descriptor is known by."""
ANNOTATION_MODULE_NAME: Final = "dev.powernode.module.name"
ANNOTATION_MODULE_VERSION: Final = "dev.powernode.module.version"
