"""Source `gcp`: the Compute Engine metadata server, the seed as instance attribute
`powernode-seed`.

Every request carries `Metadata-Flavor: Google` and every response must carry it back; a response
without it did not come from the metadata server (a proxy or captive portal) and is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from powernode.agent.identity.base import (
    DOCUMENT_LIMIT,
    USER_DATA_LIMIT,
    Discovered,
    DiscoveryConfig,
    Source,
    SourceName,
    SourceSkipped,
    identity,
    read_dmi,
)
from powernode.agent.identity.seed import parse_seed
from powernode.agent.identity.transport import Response, request

SEED_ATTRIBUTE = "powernode-seed"
_FLAVOR = {"Metadata-Flavor": "Google"}


class Gcp(Source):
    """Google Compute Engine."""

    name = SourceName.GCP
    default_base = "http://metadata.google.internal"
    dmi_fields = ("product_name", "bios_vendor")

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return (
            read_dmi(sysfs_root, "product_name") == "Google Compute Engine"
            or read_dmi(sysfs_root, "bios_vendor") == "Google"
        )

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        base = f"{cls.base_url(config)}/computeMetadata/v1/instance"
        doc = _get(f"{base}/?recursive=true", config, DOCUMENT_LIMIT).ok().json_object()
        attribute = _get(f"{base}/attributes/{SEED_ATTRIBUTE}", config, USER_DATA_LIMIT)
        seed = None
        if attribute.status != 404 and attribute.ok().body.strip():
            seed = parse_seed(
                attribute.body, source=cls.name, where=f"instance attribute {SEED_ATTRIBUTE}"
            )

        zone = _last(doc.get("zone"))
        # Attributes hold the seed's token and often other secrets (startup scripts, ssh keys).
        raw = {key: value for key, value in doc.items() if key != "attributes"}
        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(
                cls.name,
                instance_id=doc.get("id"),
                hostname=doc.get("hostname"),
                region=zone.rsplit("-", 1)[0] if zone else None,
                zone=zone,
                instance_type=_last(doc.get("machineType")),
                raw=raw,
            ),
        )


def _get(url: str, config: DiscoveryConfig, limit: int) -> Response:
    response = request("GET", url, headers=_FLAVOR, timeout_s=config.timeout_s, limit=limit)
    if response.headers.get("metadata-flavor") != "Google":
        raise SourceSkipped(
            f"{url} answered without 'Metadata-Flavor: Google'; not the metadata server"
        )
    return response


def _last(path: Any) -> str | None:
    """The last segment of a resource path such as `projects/1/zones/europe-west1-b`."""
    if not isinstance(path, str):
        return None
    return path.rsplit("/", 1)[-1] or None
