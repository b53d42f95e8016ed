"""Source `fw_cfg`: a seed passed to a QEMU guest with `-fw_cfg name=opt/powernode/seed,file=...`.

The guest kernel's `qemu_fw_cfg` driver exposes it under `/sys/firmware/qemu_fw_cfg`. QEMU has no
instance metadata, so the identity carries the DMI system UUID (when readable) and the hostname.
"""

from __future__ import annotations

import socket
from pathlib import Path

from powernode.agent.identity.base import (
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

FW_CFG_DIR = Path("firmware", "qemu_fw_cfg")
SEED_ENTRY = "opt/powernode/seed"


class FwCfg(Source):
    """The `opt/powernode/seed` entry of QEMU's firmware configuration device."""

    name = SourceName.FW_CFG

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return (sysfs_root / FW_CFG_DIR).is_dir() or read_dmi(sysfs_root, "sys_vendor") == "QEMU"

    @classmethod
    def mismatch_reason(cls, sysfs_root: Path) -> str:
        vendor = read_dmi(sysfs_root, "sys_vendor")
        return f"not QEMU (no {sysfs_root / FW_CFG_DIR}, DMI sys_vendor={vendor!r})"

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        path = config.sysfs_root / FW_CFG_DIR / "by_name" / SEED_ENTRY / "raw"
        if not path.exists():
            hint = "" if (config.sysfs_root / FW_CFG_DIR).is_dir() else "; qemu_fw_cfg not loaded?"
            raise SourceSkipped(f"no fw_cfg entry {SEED_ENTRY} ({path} missing{hint})")
        where = f"fw_cfg entry {SEED_ENTRY}"
        try:
            with path.open("rb") as handle:
                data = handle.read(USER_DATA_LIMIT + 1)
        except OSError as exc:
            raise SourceSkipped(f"cannot read {path} ({exc.strerror})") from None
        if len(data) > USER_DATA_LIMIT:
            raise SeedInvalid(cls.name, where, f"larger than {USER_DATA_LIMIT} bytes")
        seed = parse_seed(data, source=cls.name, where=where)
        dmi = {f: read_dmi(config.sysfs_root, f) for f in ("sys_vendor", "product_name")}
        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(
                cls.name,
                instance_id=read_dmi(config.sysfs_root, "product_uuid").lower(),
                hostname=socket.gethostname(),
                raw={"dmi": dmi},
            ),
        )
