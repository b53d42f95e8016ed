"""The control plane's registry over mutual TLS: the agent presents its node certificate.

A real docker-registry serves HTTPS with a certificate from the test PKI and requires client
certificates chaining to its root, as the control plane's `/v2` is to; the node's credentials
are stored in the state directory as enrollment stores them.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from powernode.agent import executors
from powernode.agent.modules.errors import FetchFailed
from powernode.agent.modules.pull import node_tls
from powernode.agent.pki import key_and_csr
from powernode.agent.seed import parse_seed
from powernode.agent.state import StateDir
from powernode.artifacts.reference import parse_reference
from powernode.artifacts.registry import RegistryClient
from powernode.artifacts.signing import KeySigner
from powernode.modules.store import ContentStore
from tests.agent.ca import TestPki, pem
from tests.agent.conftest import TOKEN
from tests.agent.modules.factories import apply, module_doc, policy_for, publish
from tests.agent.modules.test_executor import context
from tests.artifacts.servers import REGISTRY_BIN, free_port, require

NODE_ID = "0190f3c1-0000-7000-8000-000000000001"


@pytest.fixture
def tls_registry(test_pki: TestPki, tmp_path: Path) -> Iterator[str]:
    """docker-registry on HTTPS requiring a client certificate from the test PKI; its host."""
    binary = require(REGISTRY_BIN, "docker-registry")
    workdir = tmp_path / "tls-registry"
    workdir.mkdir()
    chain, key = test_pki.write_server_files(workdir)
    client_cas = workdir / "client-cas.pem"
    client_cas.write_text(test_pki.root_pem)
    host = f"127.0.0.1:{free_port()}"
    config = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": {
            "addr": host,
            "secret": secrets.token_hex(16),
            "tls": {"certificate": str(chain), "key": str(key), "clientcas": [str(client_cas)]},
        },
    }
    (workdir / "config.yml").write_text(json.dumps(config))
    with (workdir / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_tls(host, process)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_tls(host: str, process: subprocess.Popen[bytes]) -> None:
    # A TCP connect: without a client certificate the TLS handshake itself is refused.
    address, _, port = host.partition(":")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((address, int(port)), 1):
            return
        time.sleep(0.05)
    pytest.fail("the TLS docker-registry did not start", pytrace=False)


def enroll(state: Path, pki: TestPki, host: str) -> None:
    """Store node credentials for a control plane at `host`, as enrollment does."""
    made = key_and_csr(NODE_ID)
    seed = parse_seed(
        {
            "version": 1,
            "node_id": NODE_ID,
            "token": TOKEN,
            "urls": [f"https://{host}"],
            "ca": pki.root_pem,
        }
    )
    cert = pem(pki.sign_csr(made.csr_pem))
    StateDir(state).prepare()
    StateDir(state).save_enrollment(
        seed, {"source": "seed"}, made.key_pem, cert, pki.intermediate_pem, pki.root_pem
    )


async def push(state: Path, layout: Path, reference: str) -> None:
    """Push with the node's own client certificate (the test has no other)."""
    node = node_tls(state)
    assert node is not None
    async with RegistryClient(verify=node.context) as client:
        await client.push_layout(layout, parse_reference(reference))


async def test_the_control_planes_registry_is_reached_with_the_node_certificate(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    test_pki: TestPki,
    tls_registry: str,
) -> None:
    """A reference on the seed's host:port is pulled over mutual TLS by the executor."""
    enroll(state, test_pki, tls_registry)
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    reference = f"{tls_registry}/modules/web:1.0"
    await push(state, web.layout, reference)
    doc = module_doc(web, policy_for(publisher), reference=reference)

    outcome = await executors.execute(
        executors.load(), "apply_modules", {"modules": [doc]}, context(state)
    )

    assert outcome.outcome == "succeeded", outcome.result
    assert outcome.result["active"] == {"web": web.digest}


async def test_without_the_node_certificate_the_registry_is_not_reached(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    test_pki: TestPki,
    tls_registry: str,
) -> None:
    """The same reference with no node TLS fails at the pull, naming the module."""
    enroll(state, test_pki, tls_registry)
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    reference = f"{tls_registry}/modules/web:1.0"
    await push(state, web.layout, reference)
    doc = module_doc(web, policy_for(publisher), reference=reference)

    with pytest.raises(FetchFailed, match=f"module web: cannot fetch {tls_registry}"):
        await apply(state, [doc])
