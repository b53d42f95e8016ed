"""Trust policies per module (admins set them, every change an event), what a signature upload
must be, and the verification decision on a version's stored signatures, on both databases."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.artifacts.keyless import KeylessSigner, SigningAuthority
from powernode.artifacts.oci import canonical_json
from powernode.artifacts.signing import SIGNATURE_ANNOTATION, KeySigner, sign_manifest
from powernode.artifacts.trust import key_fingerprint, public_key_pem
from powernode.auth.roles import Role
from tests.api.conftest import START, Api
from tests.api.test_distribution import (
    OCI_MANIFEST,
    artifact_digest,
    import_module,
    key_signature,
    signature_body,
    upload_signature,
)

IDENTITY, ISSUER = "ci@example.com", "https://issuer.example.com"
CI_RULE = {"identity": r"ci@example\.com", "issuer": r"https://issuer\.example\.com"}


def new_key() -> KeySigner:
    return KeySigner(ec.generate_private_key(ec.SECP256R1()))


def pinning(*keys: KeySigner) -> dict[str, Any]:
    return {"public_keys": [public_key_pem(key.public_key) for key in keys]}


async def put_policy(api: Api, policy: dict[str, Any], **params: Any) -> Any:
    return await api.call("PUT", "/modules/web/trust-policy", json=policy, params=params)


async def verification(api: Api, version: str = "1.0") -> Any:
    return await api.ok("GET", f"/modules/web/versions/{version}/verification")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SigningAuthority:
    directory = tmp_path_factory.mktemp("signing")
    return SigningAuthority.load_or_create(directory, b"pw", now=START - dt.timedelta(days=1))


async def test_admins_set_read_and_delete_a_policy_and_every_change_is_an_event(
    api: Api,
) -> None:
    """PUT creates (the module need not exist), an equal PUT changes nothing, a stale version
    is 409, DELETE removes; each change records the old and the new policy."""
    first = pinning(new_key())
    created = await put_policy(api, first)
    assert created.status_code == 200, created.text
    assert created.json()["version"] == 1
    assert created.json()["updated_by"].endswith(f":test-{Role.ADMIN}")
    got = await api.call("GET", "/modules/web/trust-policy", role=Role.VIEWER)
    assert got.json() == created.json()
    assert got.json()["public_keys"] == first["public_keys"]
    assert (await put_policy(api, first)).json()["version"] == 1
    second = {"identities": [CI_RULE]}
    changed = await put_policy(api, second, version=1)
    assert changed.json()["version"] == 2
    assert changed.json()["identities"] == [CI_RULE]
    assert changed.json()["public_keys"] == []
    assert (await put_policy(api, first, version=1)).status_code == 409
    deleted = await api.call("DELETE", "/modules/web/trust-policy", params={"version": 2})
    assert deleted.status_code == 204
    assert (await api.call("GET", "/modules/web/trust-policy")).status_code == 404
    assert (await api.call("DELETE", "/modules/web/trust-policy")).status_code == 404
    changes = await api.ok("GET", "/events", params={"kind": "module.trust_policy_changed"})
    payloads = [e["payload"] for e in changes["items"]]
    empty: dict[str, Any] = {"identities": [], "public_keys": []}
    assert payloads == [
        {"name": "web", "old": None, "new": empty | first},
        {"name": "web", "old": empty | first, "new": empty | second},
        {"name": "web", "old": empty | second, "new": None},
    ]


async def test_only_admins_change_policies(api: Api) -> None:
    """Operators upload signatures but may not choose whom to trust; viewers read."""
    policy = pinning(new_key())
    for role, status in [(Role.OPERATOR, 403), (Role.VIEWER, 403), (None, 401)]:
        response = await api.call("PUT", "/modules/web/trust-policy", role=role, json=policy)
        assert response.status_code == status
    assert (await put_policy(api, policy)).status_code == 200
    refused = await api.call("DELETE", "/modules/web/trust-policy", role=Role.OPERATOR)
    assert refused.status_code == 403
    assert refused.json()["required_permission"] == "manage_trust"


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"identities": [{"identity": "ci@(example", "issuer": ".*"}]}, "identity pattern 1"),
        ({"identities": [CI_RULE, {"identity": ".*", "issuer": "[z-a]"}]}, "issuer pattern 2"),
        ({"public_keys": ["-----BEGIN PUBLIC KEY-----\nnope"]}, "public key 1"),
        ({}, "at least one"),
        ({"identities": [], "roots": []}, "roots"),
        ({"identities": [{"identity": ".*"}]}, "issuer"),
    ],
)
async def test_bad_policies_are_refused_naming_what_is_wrong(
    api: Api, policy: dict[str, Any], words: str
) -> None:
    response = await put_policy(api, policy)
    assert response.status_code == 422
    assert words in response.json()["detail"]
    assert (await api.call("GET", "/modules/web/trust-policy")).status_code == 404


async def test_without_a_policy_the_decision_is_no_and_says_how_to_set_one(
    api: Api, tmp_path: Path
) -> None:
    await import_module(api, tmp_path)
    decision = await verification(api)
    assert decision["allowed"] is False
    assert decision["policy"] is None
    assert decision["digest"] is None  # never pulled, never signed: not built
    assert "PUT /api/v1/modules/web/trust-policy" in decision["reasons"][0]


async def test_a_pinned_key_is_allowed_and_other_signers_are_explained(
    api: Api, tmp_path: Path
) -> None:
    await import_module(api, tmp_path)
    await put_policy(api, pinning(trusted := new_key()))
    unsigned = await verification(api)
    assert (unsigned["allowed"], unsigned["reasons"]) == (False, ["there are no signatures"])
    digest = await artifact_digest(api)
    assert (await upload_signature(api, key_signature(digest, key=new_key()))).status_code == 201
    stranger = await verification(api)
    assert stranger["allowed"] is False
    assert stranger["digest"] == digest
    [reason] = stranger["reasons"]
    assert "unknown signer" in reason
    signed = key_signature(digest, key=trusted, referrer=True)
    assert (await upload_signature(api, signed)).status_code == 201
    allowed = await verification(api)
    assert allowed["allowed"] is True
    assert allowed["signer"] == f"key {key_fingerprint(trusted.public_key)}"
    assert len(allowed["reasons"]) == 1  # the stranger's signature still did not count
    await put_policy(api, pinning(new_key()), version=1)
    denied = await verification(api)
    assert (denied["allowed"], len(denied["reasons"])) == (False, 2)


async def test_keyless_signatures_verify_at_upload_time_against_the_identity_rules(
    api: Api, tmp_path: Path, authority: SigningAuthority
) -> None:
    """A 10-minute certificate keeps verifying after its 10 minutes (the upload time counts);
    identity rules decide who counts; without the signing root nothing does."""
    await import_module(api, tmp_path)
    digest = await artifact_digest(api)
    signer = KeylessSigner(authority, IDENTITY, ISSUER)
    bundle = sign_manifest(digest, "modules/web", signer, now=START)
    api.clock.advance(dt.timedelta(minutes=20))
    late = await upload_signature(api, bundle.tag_artifact())
    assert late.status_code == 422
    assert "not valid now" in late.json()["detail"]
    api.clock.advance(dt.timedelta(minutes=-19))
    assert (await upload_signature(api, bundle.tag_artifact())).status_code == 201
    api.clock.advance(dt.timedelta(days=30))
    await put_policy(api, {"identities": [CI_RULE]})
    api.app.state.signing_roots = (authority.root_certificate,)
    decision = await verification(api)
    assert decision["allowed"] is True, decision["reasons"]
    assert decision["signer"] == f"{IDENTITY} from {ISSUER}"
    rule = {"identity": r".*@other\.example", "issuer": CI_RULE["issuer"]}
    await put_policy(api, {"identities": [rule]}, version=1)
    mismatch = await verification(api)
    assert mismatch["allowed"] is False
    assert "identity mismatch" in mismatch["reasons"][0]
    api.app.state.signing_roots = ()
    await put_policy(api, {"identities": [CI_RULE]}, version=2)
    rootless = await verification(api)
    assert rootless["allowed"] is False
    assert "no trusted roots" in rootless["reasons"][0]


async def test_a_certificate_signature_must_verify_with_its_own_key(
    api: Api, tmp_path: Path, authority: SigningAuthority
) -> None:
    """A layer whose signature was made by another key than its certificate's is refused."""
    await import_module(api, tmp_path)
    digest = await artifact_digest(api)
    signer = KeylessSigner(authority, IDENTITY, ISSUER)
    genuine = sign_manifest(digest, "modules/web", signer, now=START).tag_artifact()
    stolen = sign_manifest(digest, "modules/web", signer, now=START).tag_artifact()
    manifest = json.loads(genuine.manifest)
    notes = manifest["layers"][0]["annotations"]
    notes[SIGNATURE_ANNOTATION] = json.loads(stolen.manifest)["layers"][0]["annotations"][
        SIGNATURE_ANNOTATION
    ]
    forged = signature_body(genuine)
    forged["manifest"] = base64.b64encode(canonical_json(manifest)).decode()
    response = await api.call(
        "POST", "/modules/web/versions/1.0/signatures", role=Role.OPERATOR, json=forged
    )
    assert response.status_code == 422
    assert "does not verify" in response.json()["detail"]
    assert (await upload_signature(api, genuine)).status_code == 201


async def test_only_signatures_of_the_artifact_are_accepted(api: Api, tmp_path: Path) -> None:
    """Other digests, tampered or missing blobs, non-signatures and bad base64 are 422;
    viewers may not upload; unknown versions are 404."""
    await import_module(api, tmp_path)
    digest = await artifact_digest(api)
    other = key_signature("sha256:" + "1" * 64)
    good = key_signature(digest)
    payload_digest = json.loads(good.manifest)["layers"][0]["digest"]
    tampered = signature_body(good)
    tampered["blobs"][payload_digest] = base64.b64encode(b"{}").decode()
    missing = signature_body(good)
    del missing["blobs"][payload_digest]
    image = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}
    for body, words in [
        (signature_body(other), "not sha256:"),
        (tampered, "does not match"),
        (missing, "lack"),
        ({"manifest": base64.b64encode(json.dumps(image).encode()).decode(), "blobs": {}}, ""),
        ({"manifest": "%%%", "blobs": {}}, "base64"),
    ]:
        response = await api.call(
            "POST", "/modules/web/versions/1.0/signatures", role=Role.OPERATOR, json=body
        )
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"]
    viewer = await api.call(
        "POST",
        "/modules/web/versions/1.0/signatures",
        role=Role.VIEWER,
        json=signature_body(good),
    )
    assert viewer.status_code == 403
    assert (await upload_signature(api, good, version="9.9")).status_code == 404
    assert (await api.ok("GET", "/modules/web/versions/1.0/signatures")) == []
