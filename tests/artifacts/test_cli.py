"""`powernode artifact` end to end: a module imported into a real control plane is built
reproducibly, signed with a publisher key, verified (and a tampered signature refused), and
pushed to and pulled from Debian's docker-registry with its signatures."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.testing import RunningServer, running_server
from tests.artifacts.servers import Registry, require
from tests.cli.harness import Cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("control-plane")) as srv:
        yield srv


@pytest.fixture
def cli(server: RunningServer, tmp_path: Path) -> Cli:
    tree = tmp_path / "hello"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hello from a signed module\n")
    (tree / "module.toml").write_text('name = "hello"\nversion = "1.0"\n')
    runner = Cli.for_server(server)
    existing = runner.run("module", "show", "hello@1.0", ok=False)
    if existing.returncode != 0:
        runner.run("module", "import", str(tree))
    return runner


def key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = directory / f"{name}.key"
    public = directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def tagged(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    for manifest in index["manifests"]:
        if manifest.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest: str = manifest["digest"]
            return digest
    raise AssertionError(f"no tag {tag} in {layout}")


def test_the_same_module_version_builds_to_the_same_digest(cli: Cli, tmp_path: Path) -> None:
    cli.run("artifact", "build", "hello@1.0", "--layout", str(tmp_path / "a"))
    cli.run("artifact", "build", "hello@1.0", "--layout", str(tmp_path / "b"))
    assert tagged(tmp_path / "a", "1.0") == tagged(tmp_path / "b", "1.0")
    raw = subprocess.run(
        [require("skopeo", "skopeo"), "inspect", "--raw", f"oci:{tmp_path / 'a'}:1.0"],
        capture_output=True,
        text=True,
        check=True,
    )
    manifest = json.loads(raw.stdout)
    assert manifest["artifactType"] == "application/vnd.powernode.module.v1+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"


def test_a_signature_verifies_and_a_changed_byte_or_another_key_does_not(
    cli: Cli, tmp_path: Path
) -> None:
    layout = tmp_path / "signed"
    private, public = key_pair(tmp_path, "publisher")
    _, stranger = key_pair(tmp_path, "stranger")
    cli.run("artifact", "sign", "hello@1.0", "--key", str(private), "--layout", str(layout))
    digest = tagged(layout, "1.0")
    assert tagged(layout, f"sha256-{digest.removeprefix('sha256:')}.sig")
    ok = cli.run("artifact", "verify", f"oci:{layout}:1.0", "--key", str(public))
    assert "verified" in ok.stdout
    scripted = cli.json("artifact", "verify", f"oci:{layout}:1.0", "--key", str(public))
    assert scripted["digest"] == digest
    assert scripted["signer"]

    refused = cli.fails("artifact", "verify", f"oci:{layout}:1.0", "--key", str(stranger))
    assert "not trusted" in refused.stderr

    # Flip one byte of the signed payload (the simple-signing blob both flavours share).
    index = json.loads((layout / "index.json").read_text())
    payloads = set()
    for entry in index["manifests"]:
        doc = json.loads((layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes())
        for layer in doc.get("layers", []):
            if layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json":
                payloads.add(layout / "blobs" / "sha256" / layer["digest"][7:])
    assert len(payloads) == 1
    blob = payloads.pop()
    data = bytearray(blob.read_bytes())
    data[10] ^= 0x01
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    tampered = cli.fails("artifact", "verify", f"oci:{layout}:1.0", "--key", str(public))
    assert "does not match its digest" in tampered.stderr


def test_push_and_pull_through_docker_registry_keep_the_signatures(
    cli: Cli, registry: Registry, tmp_path: Path
) -> None:
    layout = tmp_path / "out"
    private, public = key_pair(tmp_path, "publisher")
    cli.run("artifact", "sign", "hello@1.0", "--key", str(private), "--layout", str(layout))
    ref = registry.ref("modules/hello", "1.0")
    cli.run("artifact", "push", "hello@1.0", ref, "--layout", str(layout), "--insecure")
    pulled = tmp_path / "pulled"
    cli.run("artifact", "pull", ref, "--layout", str(pulled), "--insecure")
    assert tagged(pulled, "1.0") == tagged(layout, "1.0")
    ok = cli.run("artifact", "verify", ref, "--key", str(public), "--insecure")
    assert "verified" in ok.stdout
    raw = subprocess.run(
        [
            require("skopeo", "skopeo"),
            "inspect",
            "--raw",
            "--tls-verify=false",
            registry.docker("modules/hello", "1.0"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(raw.stdout)["artifactType"] == "application/vnd.powernode.module.v1+json"


def test_keyless_and_key_signatures_through_the_control_plane_gate_assignment(
    cli: Cli, server: RunningServer, tmp_path: Path
) -> None:
    tree = tmp_path / "gated"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "gated").write_text("only when trusted\n")
    (tree / "module.toml").write_text('name = "gated"\nversion = "2.0"\n')
    cli.run("module", "import", str(tree))
    cli.run("node", "create", "gate-node")
    assign = (
        "task",
        "create",
        "apply_modules",
        "--node",
        "gate-node",
        "--payload",
        '{"modules": [{"name": "gated", "version": "2.0"}]}',
    )
    refused = cli.fails(*assign)
    assert "cannot be assigned" in refused.stderr

    # Keyless: the control plane certifies a fresh key for this token's identity.
    cli.run(
        "module",
        "trust",
        "gated",
        "--identity",
        "powernode://token/initial-admin",
        "--issuer",
        r"http://127\.0\.0\.1:\d+",
    )
    signed = cli.run("artifact", "sign", "gated@2.0", "--layout", str(tmp_path / "gl"))
    assert "the control plane" in signed.stdout
    # Without flags, verify applies the module's stored policy and the control plane's roots.
    assert "verified" in cli.run("artifact", "verify", f"oci:{tmp_path / 'gl'}:2.0").stdout
    task = cli.json(*assign)
    assert task["payload"]["modules"][0]["name"] == "gated"
    assert task["payload"]["modules"][0]["roots"], "the signing root goes to the agent"

    # A pinned key works the same way; a policy naming only another key refuses again.
    private, public = key_pair(tmp_path, "pinned")
    _, other = key_pair(tmp_path, "other")
    cli.run("module", "trust", "gated", "--key", str(other))
    assert "cannot be assigned" in cli.fails(*assign).stderr
    cli.run("artifact", "sign", "gated@2.0", "--key", str(private))
    cli.run("module", "trust", "gated", "--key", str(public))
    assert cli.json(*assign)["state"] == "pending"
    shown = cli.json("module", "trust", "gated", "--show")
    assert shown["public_keys"] == [public.read_text()]
    assert shown["identities"] == []
