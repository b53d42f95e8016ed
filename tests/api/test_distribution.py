"""/v2: module artifacts over the OCI Distribution API, in-process on both databases, and
skopeo against a real `serve` (the node listener with a client certificate, the operator
listener with a token) at the end."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from powernode.artifacts.models import ModuleArtifact
from powernode.artifacts.oci import Descriptor
from powernode.artifacts.package import build_module_artifact
from powernode.artifacts.signing import (
    SIGNATURE_ARTIFACT_TYPE,
    KeySigner,
    SignatureArtifact,
    sign_manifest,
    signature_tag,
)
from powernode.auth.roles import Role
from powernode.modules.entries import Entry
from powernode.modules.store import ContentStore
from powernode.testing import RunningServer, running_server
from tests.api.conftest import Api
from tests.api.test_modules import make_tree, tar_of, upload
from tests.api.test_node_api import new_agent, operator
from tests.artifacts.servers import require

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
FILES = {"etc/web.conf": "listen 80\n", "usr/bin/web": "#!/bin/sh\necho web\n"}


async def import_module(
    api: Api, tmp_path: Path, name: str = "web", version: str = "1.0", files: Any = None
) -> dict[str, Any]:
    tree = make_tree(tmp_path / f"{name}-{version}", files or FILES)
    return await upload(api, name, version, tar_of(tree))


async def v2(
    api: Api, method: str, path: str, role: Role | None = Role.VIEWER, **kwargs: Any
) -> httpx.Response:
    return await api.http.request(method, f"/v2{path}", headers=api.auth(role), **kwargs)


async def artifact_digest(api: Api, name: str = "web", version: str = "1.0") -> str:
    response = await v2(api, "GET", f"/modules/{name}/manifests/{version.replace('+', '_')}")
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def key_signature(
    digest: str, *, key: KeySigner | None = None, referrer: bool = False
) -> SignatureArtifact:
    """A publisher-key signature over `digest`, in the tag or the referrer flavour."""
    signer = key or KeySigner(ec.generate_private_key(ec.SECP256R1()))
    bundle = sign_manifest(digest, "modules/web", signer, now=dt.datetime.now(dt.UTC))
    if referrer:
        return bundle.referrer_artifact(Descriptor(OCI_MANIFEST, digest, 1234))
    return bundle.tag_artifact()


def signature_body(artifact: SignatureArtifact) -> dict[str, Any]:
    return {
        "manifest": base64.b64encode(artifact.manifest).decode(),
        "blobs": {d: base64.b64encode(b).decode() for d, b in artifact.blobs.items()},
    }


async def upload_signature(
    api: Api, artifact: SignatureArtifact, name: str = "web", version: str = "1.0"
) -> httpx.Response:
    return await api.call(
        "POST",
        f"/modules/{name}/versions/{version}/signatures",
        role=Role.OPERATOR,
        json=signature_body(artifact),
    )


def built_digest(meta: dict[str, Any], entries: list[dict[str, Any]], store: ContentStore) -> str:
    """The manifest digest `powernode artifact build` gives, from what the API hands out."""
    with build_module_artifact(
        name=meta["name"],
        version=meta["version"],
        spec=meta["spec"],
        entries=[Entry(**e) for e in entries],
        open_blob=store.open,
        created=dt.datetime.fromisoformat(meta["created_at"]),
    ) as artifact:
        return artifact.manifest_descriptor.digest


def errors(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


# the API


async def test_the_base_needs_a_token_and_names_the_api_version(api: Api) -> None:
    """`GET /v2/` is 401 with a Bearer challenge without a token, 200 `{}` for any reader."""
    refused = await v2(api, "GET", "/", role=None)
    assert refused.status_code == 401
    assert errors(refused) == ["UNAUTHORIZED"]
    ok = await v2(api, "GET", "/")
    assert ok.status_code == 200
    assert ok.json() == {}
    assert ok.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert (await v2(api, "HEAD", "/")).status_code == 200
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="http://test/v2/token",service="powernode"'
    )
    bad = await api.http.get("/v2/", headers={"Authorization": "Bearer pn_nope"})
    assert bad.status_code == 401
    refusals = await api.ok("GET", "/events", params={"kind": "api.refused"})
    assert {e["payload"]["path"] for e in refusals["items"]} == {"/v2/"}


async def test_the_token_flow_hands_back_an_api_token_given_as_password(api: Api) -> None:
    """`/v2/token` takes an API token as the Basic password (or a bearer token) and returns it
    for the Bearer challenge; anything else is 401."""
    secret = api.tokens[Role.VIEWER]
    basic = base64.b64encode(f"anyone:{secret}".encode()).decode()
    for header in (f"Basic {basic}", f"Bearer {secret}"):
        issued = await api.http.get("/v2/token", headers={"Authorization": header})
        assert issued.status_code == 200, issued.text
        assert issued.json()["token"] == secret
    wrong = base64.b64encode(b"anyone:pn_wrong_secret").decode()
    for headers in ({}, {"Authorization": f"Basic {wrong}"}, {"Authorization": "Basic %%"}):
        refused = await api.http.get("/v2/token", headers=headers)
        assert refused.status_code == 401
        assert errors(refused) == ["UNAUTHORIZED"]


async def test_a_version_tag_serves_the_artifact_built_from_the_content_store(
    api: Api, tmp_path: Path
) -> None:
    """The manifest is the one a local build gives; config and layer stream with their digests."""
    await import_module(api, tmp_path, version="1.0+build.7")
    response = await v2(api, "GET", "/modules/web/manifests/1.0_build.7")
    assert response.status_code == 200, response.text
    digest = response.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert response.headers["Content-Type"] == OCI_MANIFEST
    store: ContentStore = api.app.state.store
    meta = await api.ok("GET", "/modules/web/versions/1.0+build.7")
    entries = await api.ok("GET", "/modules/web/versions/1.0+build.7/entries")
    assert digest == built_digest(meta, entries, store)
    head = await v2(api, "HEAD", "/modules/web/manifests/1.0_build.7")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(response.content))
    by_digest = await v2(api, "GET", f"/modules/web/manifests/{digest}")
    assert by_digest.content == response.content
    manifest = json.loads(response.content)
    assert manifest["annotations"]["dev.powernode.module.version"] == "1.0+build.7"
    for descriptor in [manifest["config"], *manifest["layers"]]:
        blob = await v2(api, "GET", f"/modules/web/blobs/{descriptor['digest']}")
        assert blob.status_code == 200
        assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == descriptor["digest"]
        assert blob.headers["Content-Length"] == str(descriptor["size"])
        assert blob.headers["Docker-Content-Digest"] == descriptor["digest"]
        head = await v2(api, "HEAD", f"/modules/web/blobs/{descriptor['digest']}")
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["Content-Length"] == str(descriptor["size"])


async def test_unknown_names_tags_and_digests_get_distribution_errors(
    api: Api, tmp_path: Path
) -> None:
    """Each miss has its spec code and status; pushes are refused as unsupported."""
    await import_module(api, tmp_path)
    await import_module(api, tmp_path, name="db", files={"etc/db.conf": "port 5432\n"})
    web = await artifact_digest(api)
    db_manifest = json.loads((await v2(api, "GET", "/modules/db/manifests/1.0")).content)
    missing = "sha256:" + "0" * 64
    cases = [
        ("GET", "/modules/nope/manifests/1.0", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/modules/web/manifests/2.0", 404, "MANIFEST_UNKNOWN"),
        ("HEAD", "/modules/web/manifests/2.0", 404, None),
        ("GET", f"/modules/web/manifests/{missing}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/modules/db/manifests/{web}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/modules/web/manifests/{signature_tag(web)}", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/modules/web/manifests/sha256:xyz", 400, "DIGEST_INVALID"),
        ("GET", f"/modules/web/blobs/{missing}", 404, "BLOB_UNKNOWN"),
        ("GET", f"/modules/web/blobs/{db_manifest['layers'][0]['digest']}", 404, "BLOB_UNKNOWN"),
        ("GET", "/modules/web/blobs/md5:abc", 400, "DIGEST_INVALID"),
        ("GET", "/modules/nope/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", f"/modules/nope/referrers/{web}", 404, "NAME_UNKNOWN"),
        ("GET", "/modules/Not_A_Name/tags/list", 400, "NAME_INVALID"),
        ("GET", "/library/web/manifests/1.0", 404, "NAME_UNKNOWN"),
        ("GET", "/modules/web/tags/list?n=lots", 400, "PAGINATION_NUMBER_INVALID"),
        ("PUT", "/modules/web/manifests/2.0", 405, "UNSUPPORTED"),
        ("POST", "/modules/web/blobs/uploads/", 405, "UNSUPPORTED"),
    ]
    for method, path, status, code in cases:
        response = await v2(api, method, path)
        assert response.status_code == status, (method, path, response.text)
        if code is not None:
            assert errors(response) == [code], (method, path)
    for path in ("/modules/web/manifests/1.0", f"/modules/web/blobs/{web}", "/x"):
        assert (await v2(api, "GET", path, role=None)).status_code == 401


async def test_concurrent_first_pulls_build_once_without_blocking_the_loop(
    api: Api, tmp_path: Path
) -> None:
    """Ten first pulls at once agree on one artifact row; while its layer is being written,
    the event loop keeps answering."""
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 18))
    await import_module(api, tmp_path, files={"srv/blob.bin": noise.hex()})  # 16 MiB
    store: ContentStore = api.app.state.store
    pulls = [asyncio.create_task(v2(api, "GET", "/modules/web/manifests/1.0")) for _ in range(10)]
    layers_in_progress = store.root / "build"
    async with asyncio.timeout(30):
        while not any(layers_in_progress.glob("powernode-layer-*")):
            assert not any(task.done() for task in pulls), "the build ran on the event loop"
            await asyncio.sleep(0.001)
    assert (await api.http.get("/healthz")).status_code == 200
    assert any(layers_in_progress.glob("powernode-layer-*"))
    responses = await asyncio.gather(*pulls)
    assert {r.status_code for r in responses} == {200}
    assert len({r.headers["Docker-Content-Digest"] for r in responses}) == 1
    async with api.db.read_sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ModuleArtifact)) == 1


async def test_tags_list_has_versions_and_signature_tags_and_pages(
    api: Api, tmp_path: Path
) -> None:
    """Versions as tags, `.sig` tags once signed; `n` and `last` page with a Link header."""
    for version in ("1.0", "1.1", "2.0+local"):
        await import_module(api, tmp_path, version=version)
    listed = await v2(api, "GET", "/modules/web/tags/list")
    assert listed.json() == {"name": "modules/web", "tags": ["1.0", "1.1", "2.0_local"]}
    digest = await artifact_digest(api, version="1.1")
    assert (await upload_signature(api, key_signature(digest), version="1.1")).status_code == 201
    tags = (await v2(api, "GET", "/modules/web/tags/list")).json()["tags"]
    assert tags == sorted(["1.0", "1.1", "2.0_local", signature_tag(digest)])
    first = await v2(api, "GET", "/modules/web/tags/list", params={"n": 2})
    assert first.json()["tags"] == tags[:2]
    assert first.headers["Link"] == f'</v2/modules/web/tags/list?n=2&last={tags[1]}>; rel="next"'
    rest = await v2(api, "GET", "/modules/web/tags/list", params={"n": 2, "last": tags[1]})
    assert rest.json()["tags"] == tags[2:]
    assert "Link" not in rest.headers


async def test_uploaded_signatures_are_served_as_sig_tag_and_referrers(
    api: Api, tmp_path: Path
) -> None:
    """Tag flavour under `sha256-<hex>.sig`, referrer flavour in the referrers index; each
    once, however often uploaded; their blobs are pullable; each upload is an event."""
    await import_module(api, tmp_path)
    digest = await artifact_digest(api)
    empty = await v2(api, "GET", f"/modules/web/referrers/{digest}")
    assert empty.json() == {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    }
    key = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    tagged, referrer = key_signature(digest, key=key), key_signature(digest, referrer=True, key=key)
    created = await upload_signature(api, tagged)
    assert created.status_code == 201, created.text
    assert created.json()["flavour"] == "tag"
    assert created.json()["tag"] == signature_tag(digest)
    assert created.json()["artifact_digest"] == digest
    assert (await upload_signature(api, referrer)).json()["flavour"] == "referrer"
    again = await upload_signature(api, referrer)
    assert again.status_code == 200

    sig = await v2(api, "GET", f"/modules/web/manifests/{signature_tag(digest)}")
    assert sig.content == tagged.manifest
    assert sig.headers["Docker-Content-Digest"] == tagged.digest
    index = await v2(api, "GET", f"/modules/web/referrers/{digest}")
    assert index.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    [listed] = index.json()["manifests"]
    assert listed["digest"] == referrer.digest
    assert listed["artifactType"] == SIGNATURE_ARTIFACT_TYPE
    assert listed["size"] == len(referrer.manifest)
    filtered = await v2(
        api, "GET", f"/modules/web/referrers/{digest}", params={"artifactType": "x/y"}
    )
    assert filtered.json()["manifests"] == []
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    by_digest = await v2(api, "GET", f"/modules/web/manifests/{referrer.digest}")
    assert by_digest.content == referrer.manifest
    for blob_digest, data in referrer.blobs.items():
        assert (await v2(api, "GET", f"/modules/web/blobs/{blob_digest}")).content == data
    listed_api = await api.ok("GET", "/modules/web/versions/1.0/signatures")
    assert [s["digest"] for s in listed_api] == [tagged.digest, referrer.digest]
    added = await api.ok("GET", "/events", params={"kind": "module.signature_added"})
    assert sorted(e["payload"]["flavour"] for e in added["items"]) == ["referrer", "tag"]


# a real server, read by skopeo


def skopeo(*args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
    binary = require("skopeo", "skopeo")
    done = subprocess.run([binary, *args], capture_output=True, check=False, timeout=120)
    assert (done.returncode == 0) == ok, done.stderr.decode()
    return done


def node_cert_dir(server: RunningServer, tmp_path: Path) -> Path:
    """What `skopeo --cert-dir` reads: an enrolled node's certificate, key and our root CA."""
    agent = new_agent(server, tmp_path, "puller")
    assert agent.enroll().status_code == 201
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "node.cert").write_text(agent.cert_pem + agent.chain_pem)
    (certs / "node.key").write_bytes((agent.tmp / "key.pem").read_bytes())
    (certs / "ca.crt").write_text(agent.seed["ca"])
    return certs


def import_and_build_locally(api: httpx.Client, tmp_path: Path) -> tuple[str, Any]:
    """Import web@1.0; its spec, and the digest a local build from what the API hands gives."""
    tar = tar_of(make_tree(tmp_path / "web", FILES))
    headers = {"content-type": "application/x-tar"}
    api.post(
        "/modules/web/versions", params={"version": "1.0"}, content=tar, headers=headers
    ).raise_for_status()
    meta = api.get("/modules/web/versions/1.0").json()
    entries = api.get("/modules/web/versions/1.0/entries").json()
    store = ContentStore(tmp_path / "local-content")
    for entry in entries:
        if entry.get("sha256"):
            store.put_bytes(api.get(f"/blobs/{entry['sha256']}").content)
    return built_digest(meta, entries, store), meta["spec"]


def test_skopeo_pulls_through_both_listeners_and_the_digest_survives_a_restart(
    migrated_db_url: str, tmp_path: Path
) -> None:
    """skopeo reads the manifest with a node certificate and with an API token, and nothing
    without; `skopeo copy` gives the artifact a local build gives; a restarted server serves
    the same digest."""
    data_dir = tmp_path / "cp"
    with running_server(data_dir, database_url=migrated_db_url) as server:
        with operator(server) as api:
            expected, spec = import_and_build_locally(api, tmp_path)
        certs = node_cert_dir(server, tmp_path)
        node_ref = f"docker://{server.node_url.removeprefix('https://')}/modules/web:1.0"
        raw = skopeo("inspect", "--raw", "--cert-dir", str(certs), node_ref).stdout
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == expected
        refused = skopeo("inspect", "--raw", "--tls-verify=false", node_ref, ok=False)
        assert b"unauthorized" in refused.stderr.lower()
        token = ("--registry-token", server.token, "--tls-verify=false")
        operator_ref = f"docker://{server.url.removeprefix('http://')}/modules/web:1.0"
        assert skopeo("inspect", "--raw", *token, operator_ref).stdout == raw
        creds = ("--creds", f"ci:{server.token}", "--tls-verify=false")
        assert skopeo("inspect", "--raw", *creds, operator_ref).stdout == raw
        config = skopeo("inspect", "--raw", "--config", *token, operator_ref).stdout
        assert json.loads(config) == spec

        copied = tmp_path / "copied"
        skopeo("copy", "--src-cert-dir", str(certs), node_ref, f"oci:{copied}:1.0")
        [listed] = json.loads((copied / "index.json").read_text())["manifests"]
        assert listed["digest"] == expected
        for layer in json.loads(raw)["layers"]:
            blob = copied / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
            assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]
        admin = server.token
    with running_server(data_dir, database_url=migrated_db_url, token=admin) as again:
        ref = f"docker://{again.url.removeprefix('http://')}/modules/web:1.0"
        token = ("--registry-token", admin, "--tls-verify=false")
        assert skopeo("inspect", "--raw", *token, ref).stdout == raw
