"""Every bad input is refused, naming the module and the cause, with the active root unchanged.

Generation 1 (module `base`) is active first; each case then asks for `base` plus a bad `web`,
and the whole state (the `current` link, the generations present, and every path of the active
root with its type, mode, owner and content hash) must be the same afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.modules.errors import FetchFailed, ModuleApplyError, Rejected
from powernode.agent.modules.verify import Limits
from powernode.artifacts.keyless import KeylessSigner, SigningAuthority
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.package import parse_module_manifest
from powernode.artifacts.signing import KeySigner, Signer
from powernode.modules.store import ContentStore
from tests.agent.modules.factories import (
    Published,
    apply,
    evil_layer,
    member,
    module_doc,
    now,
    policy_for,
    publish,
    publish_layer,
    sign,
    state_snapshot,
)

ISSUER = "https://idp.example.com"
COMPANY = (r".*@example\.com", r"https://idp\.example\.com")


@dataclass
class Kit:
    """What a case needs to make its bad module."""

    store: ContentStore
    tmp: Path
    publisher: KeySigner
    stranger: KeySigner
    authority: SigningAuthority

    @property
    def policy(self) -> dict[str, Any]:
        return policy_for(self.publisher)

    @property
    def keyless_policy(self) -> dict[str, Any]:
        return policy_for(identities=[COMPANY])

    @property
    def roots(self) -> list[str]:
        from cryptography.hazmat.primitives import serialization

        return [self.authority.root_certificate.public_bytes(serialization.Encoding.PEM).decode()]

    def web(self, signer: Signer | None = None, **kwargs: Any) -> Published:
        return publish(
            self.store, self.tmp / "web-oci", signer or self.publisher, name="web", **kwargs
        )

    def evil(self, *members: tuple[tarfile.TarInfo, bytes | None]) -> dict[str, Any]:
        published = publish_layer(
            self.tmp / "evil-oci", self.publisher, evil_layer(members), name="web"
        )
        return module_doc(published, self.policy)

    def keyless(self, identity: str, issuer: str, at: dt.datetime | None = None) -> dict[str, Any]:
        signer = KeylessSigner(self.authority, identity, issuer)
        published = self.web(signer, signed_at=at)
        return module_doc(published, self.keyless_policy, roots=self.roots)


def tampered_layer(kit: Kit) -> dict[str, Any]:
    web = kit.web()
    layout = OciLayout.open(web.layout)
    layer = parse_module_manifest(layout.read_blob(web.digest)).layer
    blob = layout.blob_path(layer.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    return module_doc(web, kit.policy)


def digest_mismatch(kit: Kit) -> dict[str, Any]:
    web = kit.web()
    other = publish(kit.store, kit.tmp / "other-oci", kit.publisher, name="web", version="9.0")
    return module_doc(web, kit.policy, digest=other.digest)


def another_module(kit: Kit) -> dict[str, Any]:
    other = publish(kit.store, kit.tmp / "other-oci", kit.publisher, name="other")
    return module_doc(other, kit.policy, name="web")


def unknown_signer(kit: Kit) -> dict[str, Any]:
    return module_doc(kit.web(kit.stranger), kit.policy)


def unsigned(kit: Kit) -> dict[str, Any]:
    web = publish(kit.store, kit.tmp / "web-oci", None, name="web")
    return module_doc(web, kit.policy)


def over_another_digest(kit: Kit) -> dict[str, Any]:
    web = publish(kit.store, kit.tmp / "web-oci", None, name="web")
    other = publish(kit.store, kit.tmp / "other-oci", None, name="web", version="9.0")
    sign(web.layout, web.digest, kit.publisher, over=other.digest)
    return module_doc(web, kit.policy)


def identity_mismatch(kit: Kit) -> dict[str, Any]:
    return kit.keyless("mallory@evil.example", ISSUER)


def issuer_mismatch(kit: Kit) -> dict[str, Any]:
    return kit.keyless("bob@example.com", "https://idp.evil.example")


def expired_certificate(kit: Kit) -> dict[str, Any]:
    return kit.keyless("bob@example.com", ISSUER, at=now() - dt.timedelta(hours=1))


def untrusted_root(kit: Kit) -> dict[str, Any]:
    doc = kit.keyless("bob@example.com", ISSUER)
    return doc | {"roots": []}


def files_mismatch(kit: Kit) -> dict[str, Any]:
    files = {"etc/web.conf": {"sha256": "0" * 64}}
    return module_doc(kit.web(), kit.policy, files=files)


def truncated(kit: Kit) -> dict[str, Any]:
    layer = evil_layer([member("etc/web.conf", data=b"x" * 100_000)])
    published = publish_layer(
        kit.tmp / "cut-oci", kit.publisher, layer[: len(layer) // 2], name="web"
    )
    return module_doc(published, kit.policy)


CASES: dict[str, tuple[Callable[[Kit], dict[str, Any]], type[ModuleApplyError], str]] = {
    "tampered layer blob": (tampered_layer, Rejected, "other content"),
    "manifest digest mismatch": (digest_mismatch, Rejected, "manifest digest mismatch"),
    "another module's artifact": (another_module, Rejected, "the artifact is other@1.0"),
    "unknown signer": (unknown_signer, Rejected, "unknown signer"),
    "no signature": (unsigned, Rejected, "there are no signatures"),
    "signature over another digest": (over_another_digest, Rejected, "over another digest"),
    "identity mismatch": (identity_mismatch, Rejected, "identity mismatch"),
    "issuer mismatch": (issuer_mismatch, Rejected, "issuer mismatch"),
    "expired certificate": (expired_certificate, Rejected, "expired certificate"),
    "untrusted signing root": (untrusted_root, Rejected, "no trusted roots"),
    "file digest mismatch": (files_mismatch, Rejected, "files do not match: etc/web.conf"),
    "absolute path": (
        lambda kit: kit.evil(member("/etc/passwd")),
        Rejected,
        "is an absolute path",
    ),
    "dot-dot path": (
        lambda kit: kit.evil(member("etc/../../escape")),
        Rejected,
        "'..' component",
    ),
    "escaping symlink": (
        lambda kit: kit.evil(
            member("etc", tarfile.DIRTYPE, mode=0o755),
            member("etc/x", tarfile.SYMTYPE, linkname="../../.."),
        ),
        Rejected,
        "out of the root",
    ),
    "symlink then write through it": (
        lambda kit: kit.evil(
            member("link", tarfile.SYMTYPE, linkname="etc"), member("link/passwd")
        ),
        Rejected,
        "through the symlink",
    ),
    "escaping hard link": (
        lambda kit: kit.evil(
            member("a"), member("b", tarfile.LNKTYPE, linkname="../../etc/shadow")
        ),
        Rejected,
        "'..' component",
    ),
    "device node": (
        lambda kit: kit.evil(member("dev/sda", tarfile.CHRTYPE)),
        Rejected,
        "device node",
    ),
    "setuid file": (
        lambda kit: kit.evil(member("usr/bin/su", mode=0o4755)),
        Rejected,
        "setuid or setgid",
    ),
    "truncated layer": (truncated, Rejected, "truncated"),
}


@pytest.fixture
def kit(
    store: ContentStore,
    tmp_path: Path,
    publisher: KeySigner,
    stranger: KeySigner,
    authority: SigningAuthority,
) -> Kit:
    return Kit(store, tmp_path, publisher, stranger, authority)


@pytest.fixture
async def base(state: Path, kit: Kit) -> dict[str, Any]:
    """Generation 1 with module `base` is active; its payload entry."""
    published = publish(kit.store, kit.tmp / "base-oci", kit.publisher, name="base")
    doc = module_doc(published, kit.policy)
    await apply(state, [doc])
    return doc


@pytest.mark.parametrize("case", list(CASES))
async def test_a_bad_module_is_refused_and_the_active_root_is_unchanged(
    case: str, state: Path, kit: Kit, base: dict[str, Any], overlay: bool
) -> None:
    """The error names the module and the cause; nothing of the active state changed."""
    make, error, cause = CASES[case]
    bad = make(kit)
    before = state_snapshot(state)

    with pytest.raises(error) as caught:
        await apply(state, [base, bad], overlay=overlay)

    assert caught.value.module == "web"
    assert str(caught.value).startswith("module web: ")
    assert cause in str(caught.value)
    assert state_snapshot(state) == before
    assert before["current"] == "generations/1"
    assert before["root"]


async def test_an_oversized_tree_is_refused(state: Path, kit: Kit, base: dict[str, Any]) -> None:
    """A tree over the node's limit stops extraction, whatever its compression ratio."""
    web = kit.web(files={"var/big": b"\0" * 200_000})
    before = state_snapshot(state)

    with pytest.raises(Rejected, match="larger than the limit of 65536 bytes"):
        await apply(state, [base, module_doc(web, kit.policy)], limits=Limits(max_tree_size=65536))

    assert state_snapshot(state) == before


async def test_a_missing_artifact_is_a_fetch_failure(
    state: Path, kit: Kit, base: dict[str, Any]
) -> None:
    """A reference to nothing fails the pull; the active root stays."""
    web = kit.web()
    before = state_snapshot(state)
    missing = module_doc(web, kit.policy, reference=f"oci:{kit.tmp / 'nowhere'}:1.0")

    with pytest.raises(FetchFailed, match="module web: cannot fetch"):
        await apply(state, [base, missing])

    assert state_snapshot(state) == before
