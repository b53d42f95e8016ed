"""Pulling modules from a real registry (Debian's docker-registry), in both signature flavours."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from powernode.agent.modules.errors import FetchFailed, Rejected
from powernode.artifacts.keyless import KeylessSigner, SigningAuthority
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.package import parse_module_manifest
from powernode.artifacts.registry import push_layout
from powernode.artifacts.signing import KeySigner, signature_tag
from powernode.modules.store import ContentStore
from tests.agent.modules.factories import (
    apply,
    module_doc,
    policy_for,
    publish,
    state_snapshot,
)
from tests.artifacts.servers import Registry


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"agent-modules/{name[:80]}"


def test_a_module_signed_as_a_referrer_is_pulled_verified_and_activated(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    registry: Registry,
    repo: str,
) -> None:
    """The signature comes through the referrers (tag schema on docker-registry 2.8)."""
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    push_layout(web.layout, registry.ref(repo, "1.0"))
    doc = module_doc(web, policy_for(publisher), reference=registry.ref(repo, "1.0"))

    result = asyncio.run(apply(state, [doc]))

    assert result.active == {"web": web.digest}
    assert (state / "modules/current/root/etc/web.conf").read_bytes() == b"web 1.0\n"


def test_a_keyless_signature_under_the_cosign_sig_tag_is_found(
    state: Path,
    store: ContentStore,
    authority: SigningAuthority,
    tmp_path: Path,
    registry: Registry,
    repo: str,
) -> None:
    """Without referrers, the `sha256-<hex>.sig` tag cosign writes carries the signature."""
    signer = KeylessSigner(authority, "ci@example.com", "https://idp.example.com")
    web = publish(store, tmp_path / "web-oci", signer, name="web")
    push_layout(web.layout, registry.ref(repo, "1.0"), referrers=False)
    push_layout(web.layout, registry.ref(repo, signature_tag(web.digest)))
    root = authority.root_certificate.public_bytes(serialization.Encoding.PEM).decode()
    policy = policy_for(identities=[(r"ci@example\.com", r"https://idp\.example\.com")])
    doc = module_doc(web, policy, reference=registry.ref(repo, "1.0"), roots=[root])

    result = asyncio.run(apply(state, [doc], overlay=False))

    assert result.active == {"web": web.digest}


def test_a_blob_altered_in_the_registry_is_refused(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    registry: Registry,
    repo: str,
) -> None:
    """The registry's copy of the layer no longer matches its digest: refused while pulling."""
    policy = policy_for(publisher)
    base = publish(store, tmp_path / "base-oci", publisher, name="base")
    asyncio.run(apply(state, [module_doc(base, policy)]))
    before = state_snapshot(state)
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    push_layout(web.layout, registry.ref(repo, "1.0"))
    layout = OciLayout.open(web.layout)
    layer = parse_module_manifest(layout.read_blob(web.digest)).layer
    stored = registry.blob_file(layer.digest)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    doc = module_doc(web, policy, reference=registry.ref(repo, "1.0"))

    with pytest.raises(Rejected, match=r"module web: .* is damaged or altered"):
        asyncio.run(apply(state, [module_doc(base, policy), doc]))

    assert state_snapshot(state) == before


def test_a_tag_the_registry_does_not_have_is_a_fetch_failure(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, registry: Registry
) -> None:
    """Not found in the registry: the task fails at the pull stage, naming the module."""
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    doc: dict[str, Any] = module_doc(
        web, policy_for(publisher), reference=registry.ref("agent-modules/none", "1.0")
    )

    with pytest.raises(FetchFailed, match="module web: cannot fetch http://") as caught:
        asyncio.run(apply(state, [doc]))

    assert caught.value.stage == "pull"
    assert state_snapshot(state) == {"current": None, "generations": [], "root": {}}
