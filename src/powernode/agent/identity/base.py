"""The vocabulary every identity source shares: config, result, errors, and the source registry.

Contract for a source (one module each): subclass `Source`, set `name` to its `SourceName`, and
implement two class methods.

- `matches(sysfs_root)` reads only local files (DMI under `class/dmi/id`, other sysfs entries) and
  never touches the network: a source that does not match makes no request at all.
- `fetch(config)` is called only when `matches` is true. It returns a `Discovered` (with `seed`
  None when the platform carries no seed), or None when it found nothing; it raises
  `SourceSkipped` with a reason when it cannot read the platform, and `SeedInvalid` when a seed is
  present but wrong (an operator error that must not be papered over by the next source).

Defining the subclass registers it; `SourceName`'s order is the order sources are tried.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from powernode.errors import Category, Invalid, PowernodeError


class SourceName(enum.StrEnum):
    """Every identity source, in the order `discover` tries them; the value is the wire name."""

    SEED = "seed"
    FW_CFG = "fw_cfg"
    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
    DIGITALOCEAN = "digitalocean"
    OPENSTACK = "openstack"


USER_DATA_LIMIT = 64 * 1024
"""Largest seed or user-data payload read from any source, in bytes."""

DOCUMENT_LIMIT = 1024 * 1024
"""Largest metadata document read from any source, in bytes."""


@dataclass(frozen=True)
class DiscoveryConfig:
    """Where to look. Tests point the roots and endpoints at temporary trees and local servers.

    `require_seed=False` lets an already enrolled agent learn its identity from a platform whose
    seed has been removed; by default a source without a seed does not end the search.
    """

    seed_file: Path | None = None
    sysfs_root: Path = Path("/sys")
    endpoints: dict[str, str] = field(default_factory=dict)  # source name -> base URL override
    timeout_s: float = 2.0
    require_seed: bool = True

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise Invalid(f"timeout_s must be positive, not {self.timeout_s!r}")
        unknown = sorted(set(self.endpoints) - set(SourceName))
        if unknown:
            known = ", ".join(SourceName)
            raise Invalid(f"unknown source in endpoints: {', '.join(unknown)} (known: {known})")


@dataclass(frozen=True)
class Discovered:
    """What a source found: the seed (if it carries one) and the identity document."""

    source: str
    seed: dict[str, Any] | None
    identity: dict[str, Any]


@dataclass(frozen=True)
class Attempt:
    """One source `discover` tried and why it did not give a seed."""

    source: str
    reason: str


class IdentityError(PowernodeError):
    """No source gave the agent a seed; `tried` says what was tried and why each failed."""

    category = Category.NOT_FOUND
    title = "No identity source"

    def __init__(self, detail: str, tried: tuple[Attempt, ...] = (), **extra: Any) -> None:
        super().__init__(
            detail, tried=[{"source": a.source, "reason": a.reason} for a in tried], **extra
        )
        self.tried = tried


class SeedInvalid(IdentityError):
    """A source carries a seed, but the seed is malformed."""

    category = Category.INVALID
    title = "Invalid seed"

    def __init__(self, source: str, where: str, problem: str) -> None:
        super().__init__(
            f"invalid seed from source '{source}' ({where}): {problem}",
            source=source,
            where=where,
            problem=problem,
        )
        self.source = source
        self.problem = problem


class SourceSkipped(IdentityError):
    """A matching source could not be read; `discover` records the reason and moves on."""

    category = Category.UNAVAILABLE
    title = "Identity source unavailable"


def identity(
    source: str,
    *,
    instance_id: object = None,
    hostname: object = None,
    region: object = None,
    zone: object = None,
    instance_type: object = None,
    raw: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An identity document with every field present; empty values become null."""

    def text(value: object) -> str | None:
        return None if value is None or value == "" else str(value)

    return {
        "source": source,
        "instance_id": text(instance_id),
        "hostname": text(hostname),
        "region": text(region),
        "zone": text(zone),
        "instance_type": text(instance_type),
        "raw": dict(raw or {}),
    }


def read_dmi(sysfs_root: Path, name: str) -> str:
    """One DMI field (`class/dmi/id/<name>`), stripped; empty when absent or unreadable."""
    try:
        return (sysfs_root / "class" / "dmi" / "id" / name).read_text(errors="replace").strip()
    except OSError:
        return ""


_REGISTRY: dict[SourceName, type[Source]] = {}


class Source:
    """Base of the identity sources; see the module docstring for the contract."""

    name: ClassVar[SourceName]
    default_base: ClassVar[str] = ""
    dmi_fields: ClassVar[tuple[str, ...]] = ("sys_vendor", "product_name")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in _REGISTRY:
                raise TypeError(f"two identity sources named {cls.name!r}")
            _REGISTRY[cls.name] = cls

    @classmethod
    def matches(cls, sysfs_root: Path) -> bool:
        """Whether local files say this is the source's platform; never touches the network."""
        raise NotImplementedError

    @classmethod
    def mismatch_reason(cls, sysfs_root: Path) -> str:
        """Why `matches` said no, for the error listing what was tried."""
        seen = ", ".join(f"{f}={read_dmi(sysfs_root, f)!r}" for f in cls.dmi_fields)
        return f"not this platform (DMI {seen})"

    @classmethod
    def fetch(cls, config: DiscoveryConfig) -> Discovered | None:
        """Read the seed and identity; see the module docstring for what it may raise."""
        raise NotImplementedError

    @classmethod
    def base_url(cls, config: DiscoveryConfig) -> str:
        """The metadata service's base URL: the config's override, or the platform default."""
        return config.endpoints.get(cls.name, cls.default_base).rstrip("/")


def registered_sources() -> list[type[Source]]:
    """Every source in the order they are tried; fails if a source module was not imported."""
    missing = [name for name in SourceName if name not in _REGISTRY]
    if missing:
        raise RuntimeError(f"identity sources not registered: {', '.join(missing)}")
    return [_REGISTRY[name] for name in SourceName]
