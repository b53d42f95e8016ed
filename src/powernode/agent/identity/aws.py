"""Source `aws`: EC2 instance metadata (IMDSv2) with the seed as user data.

IMDSv2 only: a session token from `PUT /latest/api/token`, then GETs carrying it. A 403 on the
token PUT means the instance's metadata service is disabled, which no retry can change; 503 (IMDS
throttling or starting up) is retried with a short backoff.
"""

from __future__ import annotations

import socket
from pathlib import Path

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
from powernode.agent.identity.transport import request

TOKEN_TTL_S = 21600
TRIES = 3
_TOKEN_LIMIT = 4096


class Aws(Source):
    """Amazon EC2, Xen and Nitro instances alike."""

    name = SourceName.AWS
    default_base = "http://169.254.169.254"
    dmi_fields = ("sys_vendor", "board_asset_tag", "product_version", "bios_vendor")

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return (
            read_dmi(sysfs_root, "sys_vendor") == "Amazon EC2"
            or read_dmi(sysfs_root, "board_asset_tag").startswith("i-")
            or "amazon" in read_dmi(sysfs_root, "product_version").lower()
            or "amazon" in read_dmi(sysfs_root, "bios_vendor").lower()
        )

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        base = cls.base_url(config)
        token = request(
            "PUT",
            f"{base}/latest/api/token",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)},
            timeout_s=config.timeout_s,
            limit=_TOKEN_LIMIT,
            tries=TRIES,
        )
        if token.status == 403:
            raise SourceSkipped(
                "instance metadata service is disabled (token request answered HTTP 403)"
            )
        headers = {"X-aws-ec2-metadata-token": token.ok().body.decode("ascii", "replace").strip()}

        document = request(
            "GET",
            f"{base}/latest/dynamic/instance-identity/document",
            headers=headers,
            timeout_s=config.timeout_s,
            limit=DOCUMENT_LIMIT,
            tries=TRIES,
        ).ok()
        doc = document.json_object()

        user_data = request(
            "GET",
            f"{base}/latest/user-data",
            headers=headers,
            timeout_s=config.timeout_s,
            limit=USER_DATA_LIMIT,
            tries=TRIES,
        )
        seed = None
        if user_data.status != 404 and user_data.ok().body.strip():
            seed = parse_seed(user_data.body, source=cls.name, where="instance user data")

        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(
                cls.name,
                instance_id=doc.get("instanceId"),
                hostname=socket.gethostname(),
                region=doc.get("region"),
                zone=doc.get("availabilityZone"),
                instance_type=doc.get("instanceType"),
                raw=doc,
            ),
        )
