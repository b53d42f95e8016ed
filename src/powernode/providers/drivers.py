"""Provider drivers: what creating, starting, stopping and terminating a node means on each
provider. A driver registers by declaration (a subclass with `kind`); a provider kind without a
driver yet (the clouds, until their issues land) keeps nodes as records only.

Contract: drivers are called after the lifecycle change they act on has committed, with the
node's seed where the machine needs one; a driver raises to say the machine could not be
brought into the wanted state, and the caller fails the node with that reason.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, ClassVar

from powernode.db.engine import Database
from powernode.settings import Settings

DRIVERS: dict[str, type[ProviderDriver]] = {}


class ProviderDriver:
    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        DRIVERS[cls.kind] = cls

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db
        """The control plane's database, for drivers that read what a machine should boot
        (None where a driver is used without one: status, console)."""

    async def start(self, node_id: uuid.UUID, seed: dict[str, Any]) -> None:
        """Create the machine if needed and run its agent with `seed`."""
        raise NotImplementedError

    async def stop(self, node_id: uuid.UUID) -> None:
        """Stop the machine (keep it, and its agent's state, for a later start)."""
        raise NotImplementedError

    async def terminate(self, node_id: uuid.UUID) -> None:
        """Destroy the machine."""
        raise NotImplementedError

    def console_path(self, node_id: uuid.UUID) -> Path | None:
        """The machine's serial console log, for providers that keep one."""
        return None

    def status(self, node_id: uuid.UUID) -> dict[str, Any]:
        """What the provider knows about the machine (for `node show`)."""
        return {}


def driver_for(kind: str, settings: Settings, db: Database | None = None) -> ProviderDriver | None:
    from powernode.providers import local, qemu  # noqa: F401  (registers the built-in drivers)

    cls = DRIVERS.get(kind)
    return cls(settings, db) if cls else None
