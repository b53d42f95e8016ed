"""Assigning modules to a node: refused without a signature its trust policy accepts; once
signed, the queued `apply_modules` task carries what the agent needs to pull and verify."""

from __future__ import annotations

from pathlib import Path

from powernode.artifacts.trust import public_key_pem
from tests.api.conftest import Api
from tests.api.test_distribution import (
    artifact_digest,
    import_module,
    key_signature,
    upload_signature,
)
from tests.api.test_trust_policies import new_key, pinning, put_policy


async def queue(api: Api) -> tuple[int, dict[str, object]]:
    response = await api.call(
        "POST",
        "/tasks",
        json={
            "kind": "apply_modules",
            "node": "edge",
            "payload": {"modules": [{"name": "web", "version": "1.0"}]},
        },
    )
    return response.status_code, response.json()


async def test_an_unsigned_or_untrusted_module_cannot_be_assigned(api: Api, tmp_path: Path) -> None:
    await api.ok("POST", "/nodes", json={"name": "edge"})
    await import_module(api, tmp_path)
    status, problem = await queue(api)
    assert status == 403
    assert "cannot be assigned" in str(problem["detail"])
    await put_policy(api, pinning(new_key()))
    digest = await artifact_digest(api)
    assert (await upload_signature(api, key_signature(digest, key=new_key()))).status_code == 201
    status, problem = await queue(api)
    assert status == 403
    assert "unknown signer" in str(problem["detail"])
    assert await api.ok("GET", "/tasks", params={"kind": "apply_modules"}) == {
        "items": [],
        "next_cursor": None,
    }


async def test_a_trusted_module_is_queued_with_reference_digest_policy_and_file_digests(
    api: Api, tmp_path: Path
) -> None:
    await api.ok("POST", "/nodes", json={"name": "edge"})
    await import_module(api, tmp_path)
    trusted = new_key()
    await put_policy(api, pinning(trusted))
    digest = await artifact_digest(api)
    assert (await upload_signature(api, key_signature(digest, key=trusted))).status_code == 201
    status, task = await queue(api)
    assert status == 201, task
    payload = task["payload"]
    assert isinstance(payload, dict)
    [module] = payload["modules"]
    assert module["digest"] == digest
    assert module["reference"].endswith("/modules/web:1.0")
    assert module["policy"]["public_keys"] == [public_key_pem(trusted.public_key)]
    assert module["files"]
    assert all(len(f["sha256"]) == 64 for f in module["files"].values())
    assert payload["insecure"] is False
