"""Source `openstack`: the Nova metadata service, the seed as user data."""

from __future__ import annotations

from pathlib import Path

from powernode.agent.identity.base import (
    DOCUMENT_LIMIT,
    USER_DATA_LIMIT,
    Discovered,
    DiscoveryConfig,
    Source,
    SourceName,
    identity,
    read_dmi,
)
from powernode.agent.identity.seed import parse_seed
from powernode.agent.identity.transport import request

NOVA = "OpenStack Nova"
# meta_data.json may carry the instance's admin password and a random seed for its RNG.
_SECRET_KEYS = frozenset({"admin_pass", "random_seed"})


class OpenStack(Source):
    """OpenStack Nova instances (metadata service, not config drive)."""

    name = SourceName.OPENSTACK
    default_base = "http://169.254.169.254"
    dmi_fields = ("sys_vendor", "product_name", "chassis_asset_tag")

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return (
            read_dmi(sysfs_root, "sys_vendor") == "OpenStack Foundation"
            or read_dmi(sysfs_root, "product_name") == NOVA
            or read_dmi(sysfs_root, "chassis_asset_tag") == NOVA
        )

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        base = f"{cls.base_url(config)}/openstack/latest"
        doc = (
            request(
                "GET", f"{base}/meta_data.json", timeout_s=config.timeout_s, limit=DOCUMENT_LIMIT
            )
            .ok()
            .json_object()
        )
        user_data = request(
            "GET", f"{base}/user_data", timeout_s=config.timeout_s, limit=USER_DATA_LIMIT
        )
        seed = None
        if user_data.status != 404 and user_data.ok().body.strip():
            seed = parse_seed(user_data.body, source=cls.name, where="instance user data")

        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(
                cls.name,
                instance_id=doc.get("uuid"),
                hostname=doc.get("hostname"),
                zone=doc.get("availability_zone"),
                raw={key: value for key, value in doc.items() if key not in _SECRET_KEYS},
            ),
        )
