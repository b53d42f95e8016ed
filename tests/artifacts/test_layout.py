"""OCI image layouts: what we write, skopeo reads and copies; adding manifests is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powernode.artifacts import media
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.oci import canonical_json
from powernode.errors import Invalid, NotFound
from powernode.modules.store import ContentStore
from tests.artifacts.factories import build
from tests.artifacts.servers import Registry, skopeo


def test_layout_holds_marker_index_and_blobs(store: ContentStore, tmp_path: Path) -> None:
    """The layout has `oci-layout`, an index with the tag, and every blob by digest."""
    root = tmp_path / "layout"
    with build(store) as artifact:
        listed = artifact.write_layout(root, tag="1.0")
        blobs = [
            artifact.config_descriptor,
            artifact.layer_descriptor,
            artifact.manifest_descriptor,
        ]
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    assert index["mediaType"] == media.OCI_INDEX
    assert index["manifests"] == [listed.document()]
    assert listed.annotations == {"org.opencontainers.image.ref.name": "1.0"}
    assert listed.artifact_type == media.MODULE_ARTIFACT_TYPE
    for desc in blobs:
        path = root / "blobs" / "sha256" / desc.digest.removeprefix("sha256:")
        assert path.stat().st_size == desc.size
    assert OciLayout.open(root).resolve("1.0") == listed
    assert OciLayout.open(root).resolve(listed.digest) == listed


def test_skopeo_reads_the_layout(store: ContentStore, tmp_path: Path) -> None:
    """`skopeo inspect --raw oci:DIR:TAG` prints exactly our manifest."""
    root = tmp_path / "layout"
    with build(store) as artifact:
        artifact.write_layout(root, tag="1.0")
        manifest = artifact.manifest
    assert skopeo("inspect", "--raw", f"oci:{root}:1.0").encode() == manifest


def test_skopeo_copies_the_layout_to_a_registry(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """skopeo pushes our layout unchanged: the registry serves our manifest's bytes."""
    root = tmp_path / "layout"
    with build(store) as artifact:
        artifact.write_layout(root, tag="1.0")
        manifest = artifact.manifest
    skopeo("copy", f"oci:{root}:1.0", registry.docker(repo, "1.0"), "--dest-tls-verify=false")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", registry.docker(repo, "1.0"))
    assert raw.encode() == manifest


def test_adding_manifests_is_idempotent_and_tags_move(store: ContentStore, tmp_path: Path) -> None:
    """The same manifest twice is listed once; a tag given to another manifest moves to it."""
    root = tmp_path / "layout"
    with build(store, version="1.0") as one, build(store, version="2.0") as two:
        first = one.write_layout(root, tag="stable")
        assert one.write_layout(root, tag="stable") == first
        second = two.write_layout(root, tag="stable")
        one.write_layout(root)  # tagged with its version, "1.0"
    layout = OciLayout.open(root)
    assert layout.tags() == {
        "stable": second,
        "1.0": layout.resolve("1.0"),
    }
    assert layout.resolve("1.0").digest == first.digest
    referrer = canonical_json({"schemaVersion": 2, "mediaType": media.OCI_MANIFEST, "layers": []})
    added = layout.add_manifest(referrer, media.OCI_MANIFEST, artifact_type="application/x-sig")
    assert (
        layout.add_manifest(referrer, media.OCI_MANIFEST, artifact_type="application/x-sig")
        == added
    )
    assert [d.digest for d in layout.manifests()].count(added.digest) == 1
    assert len(layout.manifests()) == 3


def test_a_damaged_blob_or_missing_layout_is_reported(store: ContentStore, tmp_path: Path) -> None:
    """Reading a blob checks its digest; a directory without `oci-layout` is not a layout."""
    with pytest.raises(NotFound, match="not an OCI image layout"):
        OciLayout.open(tmp_path)
    root = tmp_path / "layout"
    with build(store) as artifact:
        listed = artifact.write_layout(root)
    layout = OciLayout.open(root)
    path = layout.blob_path(listed.digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b"web", b"bew"))
    with pytest.raises(Invalid, match="does not match its digest"):
        layout.read_blob(listed.digest)
    with pytest.raises(NotFound):
        layout.resolve("no-such-tag")
