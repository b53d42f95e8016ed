"""Identity discovery: where the agent learns who it is and how to reach the control plane.

Interface contract (implementation in this package's modules):

    discover(config: DiscoveryConfig) -> Discovered

Sources are tried in order (local seed file, QEMU fw_cfg, AWS, GCP, Azure, DigitalOcean,
OpenStack); each checks DMI/sysfs first so that no network probe happens on a platform that does
not match. The first source that yields a seed wins. A malformed seed raises `SeedInvalid` at
once (naming the source and the flaw); when no source yields a seed, `IdentityError` lists every
source and why it gave none (`.tried`).

Sources are registered by declaration: one module per source, each a `base.Source` subclass; the
order is `base.SourceName`'s. This package imports only the standard library and
`powernode.errors`, never the server stack.
"""

from __future__ import annotations

# Importing the source modules registers them with `base.Source`.
from powernode.agent.identity import (  # noqa: F401
    aws,
    azure,
    digitalocean,
    fw_cfg,
    gcp,
    local,
    openstack,
)
from powernode.agent.identity.base import (
    Attempt,
    Discovered,
    DiscoveryConfig,
    IdentityError,
    SeedInvalid,
    Source,
    SourceName,
    SourceSkipped,
    registered_sources,
)

__all__ = [
    "Attempt",
    "Discovered",
    "DiscoveryConfig",
    "IdentityError",
    "SeedInvalid",
    "Source",
    "SourceName",
    "SourceSkipped",
    "discover",
]


def discover(config: DiscoveryConfig) -> Discovered:
    """The seed and identity from the first source that has a seed; see the module docstring."""
    tried: list[Attempt] = []
    without_seed: Discovered | None = None
    for source in registered_sources():
        if not source.matches(config.sysfs_root):
            tried.append(Attempt(source.name, source.mismatch_reason(config.sysfs_root)))
            continue
        try:
            found = source.fetch(config)
        except SourceSkipped as exc:
            tried.append(Attempt(source.name, exc.detail))
            continue
        if found is None:
            tried.append(Attempt(source.name, "found nothing"))
        elif found.seed is None:
            instance = found.identity.get("instance_id") or "this instance"
            tried.append(Attempt(source.name, f"platform matched, but {instance} has no seed"))
            without_seed = without_seed or found
        else:
            return found
    if without_seed is not None and not config.require_seed:
        return without_seed
    lines = "".join(f"\n  {attempt.source}: {attempt.reason}" for attempt in tried)
    raise IdentityError(f"no identity source provided a seed; tried:{lines}", tuple(tried))
