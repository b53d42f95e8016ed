"""Source `digitalocean`: the droplet metadata service, the seed as user data.

One document, `/metadata/v1.json`, carries both the identity and the user data.
"""

from __future__ import annotations

from pathlib import Path

from powernode.agent.identity.base import (
    DOCUMENT_LIMIT,
    USER_DATA_LIMIT,
    Discovered,
    DiscoveryConfig,
    SeedInvalid,
    Source,
    SourceName,
    identity,
    read_dmi,
)
from powernode.agent.identity.seed import parse_seed
from powernode.agent.identity.transport import request


class DigitalOcean(Source):
    """DigitalOcean droplets."""

    name = SourceName.DIGITALOCEAN
    default_base = "http://169.254.169.254"
    dmi_fields = ("sys_vendor",)

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return read_dmi(sysfs_root, "sys_vendor") == "DigitalOcean"

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        doc = (
            request(
                "GET",
                f"{cls.base_url(config)}/metadata/v1.json",
                timeout_s=config.timeout_s,
                limit=DOCUMENT_LIMIT,
            )
            .ok()
            .json_object()
        )
        where = "droplet user data"
        user_data = doc.get("user_data")
        seed = None
        if isinstance(user_data, str) and user_data.strip():
            if len(user_data.encode()) > USER_DATA_LIMIT:
                raise SeedInvalid(cls.name, where, f"larger than {USER_DATA_LIMIT} bytes")
            seed = parse_seed(user_data, source=cls.name, where=where)

        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(
                cls.name,
                instance_id=doc.get("droplet_id"),
                hostname=doc.get("hostname"),
                region=doc.get("region"),
                # The seed's token must not travel on in the identity document.
                raw={key: value for key, value in doc.items() if key != "user_data"},
            ),
        )
