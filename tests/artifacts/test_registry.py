"""Pushing and pulling module artifacts against Debian's docker-registry, checked with skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powernode.artifacts import media
from powernode.artifacts.layer import read_module_layer
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.oci import Descriptor, canonical_json, sha256_digest
from powernode.artifacts.registry import (
    DigestMismatch,
    RegistryClient,
    parse_reference,
    pull,
    push_layout,
)
from powernode.errors import NotFound, Unavailable
from powernode.modules.store import ContentStore
from tests.artifacts.factories import build, noise
from tests.artifacts.servers import Registry, free_port, skopeo

SIGNATURE_TYPE = "application/vnd.powernode.test.signature+json"


def module_layout(store: ContentStore, root: Path, **overrides: object) -> Descriptor:
    """An OCI layout at `root` holding one module artifact tagged 1.0."""
    with build(store, **overrides) as artifact:  # type: ignore[arg-type]
        return artifact.write_layout(root, tag="1.0")


def add_signature(root: Path, subject: Descriptor, payload: bytes = b"signed") -> Descriptor:
    """An untagged signature-like manifest in the layout, referring to `subject`."""
    layout = OciLayout.open(root)
    empty = layout.put_blob_bytes(b"{}")
    blob = layout.put_blob_bytes(payload)
    doc = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": SIGNATURE_TYPE,
        "config": {"mediaType": media.OCI_EMPTY_JSON, "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": blob, "size": len(payload)}],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
    }
    return layout.add_manifest(
        canonical_json(doc), media.OCI_MANIFEST, artifact_type=SIGNATURE_TYPE
    )


def test_pushed_artifact_is_seen_by_skopeo_with_its_artifact_type(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """Our push stores our manifest bytes; skopeo reads them back with the artifactType."""
    listed = module_layout(store, tmp_path / "layout")
    result = push_layout(tmp_path / "layout", registry.ref(repo, "1.0"))
    assert result.digest == listed.digest
    assert len(result.uploaded) == 2
    raw = skopeo("inspect", "--raw", "--tls-verify=false", registry.docker(repo, "1.0"))
    assert json.loads(raw)["artifactType"] == media.MODULE_ARTIFACT_TYPE
    assert sha256_digest(raw.encode()) == listed.digest
    again = push_layout(tmp_path / "layout", registry.ref(repo, "1.0"))
    assert (again.uploaded, len(again.existing)) == ([], 2)


def test_pull_of_what_skopeo_pushed_gives_the_same_artifact(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """skopeo copies our layout up; our pull brings back identical blobs and a readable tree."""
    source = tmp_path / "source"
    listed = module_layout(store, source)
    skopeo("copy", f"oci:{source}:1.0", registry.docker(repo, "1.0"), "--dest-tls-verify=false")
    pulled = pull(registry.ref(repo, "1.0"), tmp_path / "pulled")
    assert pulled.digest == listed.digest
    assert pulled.annotations == {"org.opencontainers.image.ref.name": "1.0"}
    for blob in (source / "blobs" / "sha256").iterdir():
        assert (
            tmp_path / "pulled" / "blobs" / "sha256" / blob.name
        ).read_bytes() == blob.read_bytes()
    layout = OciLayout.open(tmp_path / "pulled")
    layer = json.loads(layout.read_blob(pulled.digest))["layers"][0]
    with layout.open_blob(layer["digest"]) as handle:
        paths = [m.path for m in read_module_layer(handle, expected_digest=layer["digest"])]
    assert "etc/motd" in paths
    assert skopeo("inspect", "--raw", f"oci:{tmp_path / 'pulled'}:1.0") == skopeo(
        "inspect", "--raw", f"oci:{source}:1.0"
    )


async def test_large_blobs_go_up_in_chunks(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """With a chunk size, a 3 MiB layer is sent as PATCHes with Content-Range, then PUT."""
    module_layout(store, tmp_path / "layout", files={"big.bin": noise(repo, 3 << 20)})
    ref = parse_reference(registry.ref(repo, "1.0"))
    async with RegistryClient(chunk_size=1 << 20) as client:
        result = await client.push_layout(tmp_path / "layout", ref)
        assert len(result.uploaded) == 2
        await client.pull(ref, tmp_path / "pulled")
    assert len(registry.requests("PATCH", f"/v2/{repo}/blobs/uploads/")) == 4
    layer = OciLayout.open(tmp_path / "layout").blob_path(result.uploaded[1])
    pulled = OciLayout.open(tmp_path / "pulled").blob_path(result.uploaded[1])
    assert pulled.read_bytes() == layer.read_bytes()


def test_blobs_are_mounted_from_another_repository(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """Blobs are mounted from a repository that has them; sessions of ones without are dropped."""
    module_layout(store, tmp_path / "layout", files={"m": noise(repo, 1000)})
    push_layout(tmp_path / "layout", registry.ref(f"{repo}/a", "1.0"))
    mounted = push_layout(
        tmp_path / "layout", registry.ref(f"{repo}/b", "1.0"), mount_from=[f"{repo}/a"]
    )
    assert (len(mounted.mounted), mounted.uploaded) == (2, [])
    fallback = push_layout(
        tmp_path / "layout", registry.ref(f"{repo}/c", "1.0"), mount_from=[f"{repo}/nothing"]
    )
    assert (fallback.mounted, len(fallback.uploaded)) == ([], 2)
    mounts = registry.requests("POST", f"/v2/{repo}/b/blobs/uploads/?mount=sha256")
    assert len(mounts) == 2
    assert all('HTTP/1.1" 201 ' in line for line in mounts)
    second_try = push_layout(
        tmp_path / "layout",
        registry.ref(f"{repo}/d", "1.0"),
        mount_from=[f"{repo}/nothing", f"{repo}/a"],
    )
    assert (len(second_try.mounted), second_try.uploaded) == (2, [])
    assert len(registry.requests("DELETE", f"/v2/{repo}/d/blobs/uploads/")) == 2


def test_a_blob_damaged_on_the_registry_is_refused_on_pull(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """Bytes altered on the registry's disk fail the pull; nothing of it lands in the layout."""
    module_layout(store, tmp_path / "layout", files={"unique": noise(repo, 5000)})
    result = push_layout(tmp_path / "layout", registry.ref(repo, "1.0"))
    layer_digest = result.uploaded[1]
    data = registry.blob_file(layer_digest)
    data.write_bytes(bytes(b ^ 0xFF for b in data.read_bytes()))
    with pytest.raises(DigestMismatch) as caught:
        pull(registry.ref(repo, "1.0"), tmp_path / "pulled")
    assert registry.host in caught.value.detail
    assert repo in caught.value.detail
    assert layer_digest in caught.value.detail
    pulled = OciLayout.open(tmp_path / "pulled")
    assert not pulled.has_blob(layer_digest)
    assert pulled.manifests() == []
    assert [p.name for p in (tmp_path / "pulled" / "blobs" / "sha256").iterdir()] == [
        result.uploaded[0].removeprefix("sha256:")
    ]


def test_a_manifest_damaged_on_the_registry_is_refused(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """A manifest whose bytes no longer match the digest the registry announces is refused."""
    listed = module_layout(store, tmp_path / "layout", name="damaged")
    push_layout(tmp_path / "layout", registry.ref(repo, "1.0"))
    path = registry.blob_file(listed.digest)
    path.write_bytes(path.read_bytes().replace(b'"damaged"', b'"dameged"'))
    with pytest.raises(DigestMismatch, match="returned a manifest with digest"):
        pull(registry.ref(repo, "1.0"), tmp_path / "pulled")
    by_digest = registry.ref(repo) + "@" + listed.digest
    with pytest.raises(DigestMismatch, match=f"expected {listed.digest}"):
        pull(by_digest, tmp_path / "pulled")


async def test_referrers_travel_with_the_artifact_through_the_tag_schema(
    store: ContentStore, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """docker-registry 2.8 has no referrers API: signatures are found by the sha256-<hex> tag."""
    root = tmp_path / "layout"
    listed = module_layout(store, root)
    signature = add_signature(root, listed)
    ref = parse_reference(registry.ref(repo, "1.0"))
    async with RegistryClient() as client:
        result = await client.push_layout(root, ref)
        assert result.referrers == [signature.digest]
        await client.push_layout(root, ref)  # again: the referrers index does not grow
        found = await client.referrers(ref, listed.digest)
        assert [(d.digest, d.artifact_type) for d in found] == [(signature.digest, SIGNATURE_TYPE)]
        assert await client.referrers(ref, listed.digest, artifact_type="other/type") == []
        pulled = await client.pull(ref, tmp_path / "pulled")
    assert len(registry.requests("GET", f"/v2/{repo}/referrers/{listed.digest}")) >= 1
    tag = "sha256-" + listed.digest.removeprefix("sha256:")
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", registry.docker(repo, tag)))
    assert [d["digest"] for d in index["manifests"]] == [signature.digest]
    layout = OciLayout.open(tmp_path / "pulled")
    assert {d.digest for d in layout.manifests()} == {pulled.digest, signature.digest}
    assert layout.has_blob(sha256_digest(b"signed"))


def test_missing_artifacts_and_unreachable_registries_are_named(
    tmp_path: Path, registry: Registry, repo: str
) -> None:
    """Errors carry the registry, the repository and what was being done."""
    with pytest.raises(NotFound) as caught:
        pull(registry.ref(repo, "no-such-tag"), tmp_path / "pulled")
    assert f"{registry.host}/{repo}" in caught.value.detail
    assert "fetching manifest no-such-tag" in caught.value.detail
    with pytest.raises(Unavailable, match=r"cannot reach registry 127\.0\.0\.1:\d+"):
        pull(f"http://127.0.0.1:{free_port()}/{repo}:1.0", tmp_path / "pulled")
