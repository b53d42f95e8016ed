"""Config factory for identity tests: network sources not under test go to a recorder.

Pointing every other network source at a recorder catches a source that probes when it should not,
and keeps tests from ever reaching a real 169.254.169.254.
"""

from __future__ import annotations

from pathlib import Path

from powernode.agent.identity import DiscoveryConfig, SourceName
from powernode.agent.identity.testing import DMI, FakeServer, write_dmi

NETWORK_SOURCES = [n for n in SourceName if n not in {SourceName.SEED, SourceName.FW_CFG}]


def make_config(
    tmp_path: Path,
    platform: str,
    recorder: FakeServer,
    *,
    endpoints: dict[str, str] | None = None,
    seed_file: Path | None = None,
    timeout_s: float = 2.0,
    require_seed: bool = True,
) -> DiscoveryConfig:
    """A config for `platform`'s DMI; network sources not in `endpoints` go to `recorder`."""
    return DiscoveryConfig(
        seed_file=seed_file,
        sysfs_root=write_dmi(tmp_path / "sys", **DMI[platform]),
        endpoints={**{n.value: recorder.url for n in NETWORK_SOURCES}, **(endpoints or {})},
        timeout_s=timeout_s,
        require_seed=require_seed,
    )
