"""Source `azure`: Azure Instance Metadata Service, the seed as (base64) user data.

IMDS needs `Metadata: true` on every request and refuses requests that went through a proxy;
`transport` never uses one.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from powernode.agent.identity.base import (
    DOCUMENT_LIMIT,
    USER_DATA_LIMIT,
    Discovered,
    DiscoveryConfig,
    SeedInvalid,
    Source,
    SourceName,
    SourceSkipped,
    identity,
    read_dmi,
)
from powernode.agent.identity.seed import parse_seed
from powernode.agent.identity.transport import request

AZURE_CHASSIS_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"
INSTANCE_PATH = "/metadata/instance?api-version=2021-02-01"
USER_DATA_PATH = "/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
_HEADERS = {"Metadata": "true"}
# base64 makes user data a third larger than the seed it carries.
_ENCODED_LIMIT = (USER_DATA_LIMIT + 2) // 3 * 4


class Azure(Source):
    """Microsoft Azure virtual machines."""

    name = SourceName.AZURE
    default_base = "http://169.254.169.254"
    dmi_fields = ("sys_vendor", "chassis_asset_tag")

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return (
            read_dmi(sysfs_root, "sys_vendor") == "Microsoft Corporation"
            and read_dmi(sysfs_root, "chassis_asset_tag") == AZURE_CHASSIS_ASSET_TAG
        )

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        base = cls.base_url(config)
        doc = (
            request(
                "GET",
                f"{base}{INSTANCE_PATH}",
                headers=_HEADERS,
                timeout_s=config.timeout_s,
                limit=DOCUMENT_LIMIT,
            )
            .ok()
            .json_object()
        )
        user_data = request(
            "GET",
            f"{base}{USER_DATA_PATH}",
            headers=_HEADERS,
            timeout_s=config.timeout_s,
            limit=_ENCODED_LIMIT,
        )
        seed = None
        if user_data.status != 404 and user_data.ok().body.strip():
            where = "instance user data"
            try:
                decoded = base64.b64decode(b"".join(user_data.body.split()), validate=True)
            except binascii.Error:
                raise SeedInvalid(cls.name, where, "not valid base64") from None
            seed = parse_seed(decoded, source=cls.name, where=where)

        compute = doc.get("compute")
        if not isinstance(compute, dict):
            raise SourceSkipped(f"{base}{INSTANCE_PATH} answered without a 'compute' object")
        # The instance document repeats the user data, i.e. the seed's token.
        raw = {**doc, "compute": {k: v for k, v in compute.items() if k != "userData"}}
        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(
                cls.name,
                instance_id=compute.get("vmId"),
                hostname=compute.get("name"),
                region=compute.get("location"),
                zone=compute.get("zone"),
                instance_type=compute.get("vmSize"),
                raw=raw,
            ),
        )
