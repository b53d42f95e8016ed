"""The seed document (docs/node-protocol.md, "Seed") and how the agent finds one.

`find_seed` asks identity discovery (`powernode.agent.identity.discover`: seed file, QEMU
fw_cfg, cloud metadata) for a seed; `parse_seed` turns the seed document into a typed `Seed` (the
same parser reads seed.json back from the state directory).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from powernode.agent.certs import pem_certificates
from powernode.agent.errors import SeedError
from powernode.agent.identity import Discovered, DiscoveryConfig

TOKEN = re.compile(r"[a-z0-9]{6}\.[a-z0-9]{16}")

Discover = Callable[[DiscoveryConfig], Discovered]


@dataclass(frozen=True)
class Seed:
    """A validated version-1 seed."""

    node_id: str
    token: str
    urls: tuple[str, ...]
    ca_pem: str

    def to_json(self) -> dict[str, Any]:
        """The seed as the document it was parsed from."""
        return {
            "version": 1,
            "node_id": self.node_id,
            "token": self.token,
            "urls": list(self.urls),
            "ca": self.ca_pem,
        }


def parse_seed(doc: object) -> Seed:
    """`doc` as a Seed, or SeedError naming the first thing wrong with it."""
    if not isinstance(doc, dict):
        raise SeedError("the seed is not a JSON object")
    if doc.get("version") != 1:
        raise SeedError(f"unsupported seed version {doc.get('version')!r}; this agent reads 1")
    node_id = doc.get("node_id")
    if not isinstance(node_id, str) or not node_id.strip():
        raise SeedError("the seed has no node_id")
    token = doc.get("token")
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise SeedError("the seed's token is not a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16})")
    urls = doc.get("urls")
    if not isinstance(urls, list) or not urls:
        raise SeedError("the seed has no urls")
    for url in urls:
        if (
            not isinstance(url, str)
            or urlsplit(url).scheme != "https"
            or not urlsplit(url).hostname
        ):
            raise SeedError(f"seed url {url!r} is not an https:// URL")
    ca = doc.get("ca")
    if not isinstance(ca, str) or not pem_certificates(ca):
        raise SeedError("the seed's ca is not a PEM certificate")
    return Seed(node_id, token, tuple(u.rstrip("/") for u in urls), ca)


def find_seed(discover: Discover, config: DiscoveryConfig) -> tuple[Seed, dict[str, Any]]:
    """The seed and identity document discovery yields, or SeedError if it yields no seed."""
    try:
        found = discover(config)
    except SeedError:
        raise
    except Exception as exc:
        raise SeedError(f"identity discovery failed: {type(exc).__name__}: {exc}") from exc
    if found.seed is None:
        raise SeedError(f"identity source {found.source!r} carries no seed; pass --seed FILE")
    return parse_seed(found.seed), dict(found.identity)
