"""Source `seed`: a seed file the operator names (`powernode-agent --seed FILE`).

Always matches; it is the operator's explicit choice, so an unreadable or malformed file is an
error rather than a reason to try the next source.
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
)
from powernode.agent.identity.seed import parse_seed


class SeedFile(Source):
    """The seed file named in `DiscoveryConfig.seed_file`."""

    name = SourceName.SEED

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        return True

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered:
        path = config.seed_file
        if path is None:
            raise SourceSkipped("no seed file configured")
        where = f"file {path}"
        try:
            with path.open("rb") as handle:
                data = handle.read(USER_DATA_LIMIT + 1)
        except OSError as exc:
            raise SeedInvalid(cls.name, where, f"cannot read it ({exc.strerror})") from None
        if len(data) > USER_DATA_LIMIT:
            raise SeedInvalid(cls.name, where, f"larger than {USER_DATA_LIMIT} bytes")
        seed = parse_seed(data, source=cls.name, where=where)
        return Discovered(
            source=cls.name,
            seed=seed,
            identity=identity(cls.name, hostname=socket.gethostname(), raw={"path": str(path)}),
        )
