"""End to end: a module imported into a real control plane, signed, trusted by policy, assigned
to a node; the node's real agent pulls it from the control plane's /v2 over mTLS, verifies it and
activates it; the task reports the active digest."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.agent.modules.generations import Generations
from powernode.artifacts.signing import KeySigner, sign_manifest
from powernode.artifacts.trust import public_key_pem
from powernode.testing import POWERNODE, RunningServer, running_server
from tests.agent.test_against_control_plane import (
    FAST,
    agent_process,
    api,
    node_state,
    seed_for,
    task,
    wait_until,
)
from tests.api.test_distribution import signature_body


def sign_and_trust(server: RunningServer, name: str = "motd", version: str = "1.0") -> str:
    """Sign the module version's artifact with a fresh key, upload the signature and make the
    module's trust policy pin that key; returns the artifact's manifest digest."""
    headers = {"Authorization": f"Bearer {server.token}"}
    digest = httpx.get(
        f"{server.url}/v2/modules/{name}/manifests/{version}", headers=headers, timeout=120
    ).headers["Docker-Content-Digest"]
    key = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    signature = sign_manifest(digest, f"modules/{name}", key, now=dt.datetime.now(dt.UTC))
    with api(server) as http:
        http.post(
            f"/modules/{name}/versions/{version}/signatures",
            json=signature_body(signature.tag_artifact()),
        ).raise_for_status()
        http.put(
            f"/modules/{name}/trust-policy",
            json={"public_keys": [public_key_pem(key.public_key)]},
        ).raise_for_status()
    return digest


def test_a_signed_module_is_pulled_verified_and_activated_by_a_real_agent(
    tmp_path: Path,
) -> None:
    with running_server(tmp_path / "cp", env=FAST) as server:
        tree = tmp_path / "motd"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "motd").write_text("signed and verified\n")
        (tree / "module.toml").write_text('name = "motd"\nversion = "1.0"\n')
        subprocess.run(
            [POWERNODE, "module", "import", str(tree)],
            env=server.env,
            check=True,
            capture_output=True,
        )
        digest = sign_and_trust(server)

        seed = seed_for(server, "edge-m", tmp_path)
        state_dir = tmp_path / "agent"
        with agent_process(state_dir, seed, tmp_path / "agent.log"):
            wait_until(lambda: node_state(server, "edge-m") == "running", 30, "running")
            with api(server) as http:
                created = http.post(
                    "/tasks",
                    json={
                        "kind": "apply_modules",
                        "node": "edge-m",
                        "payload": {"modules": [{"name": "motd", "version": "1.0"}]},
                    },
                )
                assert created.status_code == 201, created.text
            done = wait_until(
                lambda: (
                    (t := task(server, created.json()["id"]))["state"]
                    in ("succeeded", "failed", "expired")
                    and t
                ),
                90,
                "apply_modules to finish",
            )
            # The agent's next heartbeats report the active digests: the node is in sync.
            with api(server) as http:
                wait_until(
                    lambda: http.get("/nodes/edge-m").json()["module_drift"] == "in_sync",
                    20,
                    "the node to report its modules",
                )
                node = http.get("/nodes/edge-m").json()
            assert node["desired_modules"] == {"motd": digest}
        log = (tmp_path / "agent.log").read_text()
        assert done["state"] == "succeeded", json.dumps(done["result"]) + log[-3000:]
        assert done["result"]["active"] == {"motd": digest}
        current = state_dir / "modules" / "current"
        assert current.is_symlink()
        root = current / "root"
        try:
            assert (root / "etc" / "motd").read_text() == "signed and verified\n"
        finally:
            Generations(state_dir).release()  # the overlay and its EROFS lowers: leave no mount
            assert not os.path.ismount(root)
