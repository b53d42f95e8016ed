"""Debian package relations of module specs, and merging them across the modules of a template.

A module lists the Debian packages it needs, one relation per entry: `"nginx"` or
`"nginx (>= 1.22)"`. Merging collects every relation per package and reports each package whose
version constraints no single version satisfies. Versions compare by Debian rules
(`debian.debian_support.Version`: epochs, `~` sorting before everything, and so on).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from debian.deb822 import PkgRelation
from debian.debian_support import Version as DebianVersion

from powernode.errors import Invalid

if TYPE_CHECKING:
    from powernode.modules.spec import ModuleSpec

RelationOp = Literal[">=", "<=", "=", ">>", "<<"]
RELATION_OPS: tuple[RelationOp, ...] = (">=", "<=", "=", ">>", "<<")

# Debian policy 5.6.1: lower case letters, digits, '+', '-', '.'; at least two characters.
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# What python-debian's parser accepts as a name; anything else came back raw, unparsed.
_PARSED_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9.+-]*$")
_EXAMPLE = "write one package per entry, e.g. 'nginx' or 'nginx (>= 1.22)'"


@dataclass(frozen=True)
class PackageRelation:
    """One package with an optional version constraint, as written in a module spec."""

    name: str
    op: RelationOp | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.op is None:
            return self.name
        return f"{self.name} ({self.op} {self.version})"


def parse_package_relation(text: str) -> PackageRelation:
    """Parse one Debian package relation such as `nginx (>= 1.22)`; raise Invalid if malformed."""
    raw = text.strip()
    if not raw:
        raise Invalid(f"package relation is empty; {_EXAMPLE}")
    if "," in raw:
        raise Invalid(
            f"package relation {text!r} lists several packages; {_EXAMPLE} and put each package "
            "in its own entry"
        )
    if "|" in raw:
        raise Invalid(
            f"package relation {text!r} has alternatives ('|'), which modules do not support; "
            "choose one package"
        )
    groups = PkgRelation.parse_relations(raw)
    parsed = groups[0][0]
    name = parsed["name"]
    if name == raw and not _PARSED_NAME.match(raw):
        # python-debian returns text it cannot parse as the name unchanged.
        raise Invalid(f"package relation {text!r} is not a Debian package relation; {_EXAMPLE}")
    if not _PACKAGE_NAME.match(name):
        raise Invalid(
            f"package name {name!r} in {text!r} is not a valid Debian package name: use lower "
            "case letters, digits, '+', '-' and '.', at least two characters, starting with a "
            "letter or digit"
        )
    if parsed["archqual"] is not None or parsed["arch"] or parsed["restrictions"]:
        raise Invalid(
            f"package relation {text!r} has an architecture qualifier or restriction, which "
            f"modules do not support; {_EXAMPLE}"
        )
    if parsed["version"] is None:
        return PackageRelation(name)
    op, version = parsed["version"]
    if op not in RELATION_OPS:
        raise Invalid(
            f"package relation {text!r} uses the operator {op!r}; use one of "
            + ", ".join(RELATION_OPS)
            + (
                " ('<' and '>' are obsolete: write '<<' or '<=', '>>' or '>=')"
                if op in ("<", ">")
                else ""
            )
        )
    try:
        debian_version = DebianVersion(version)
    except ValueError:
        raise Invalid(
            f"package relation {text!r} has an invalid Debian version {version!r}"
        ) from None
    if not (debian_version.upstream_version or "")[:1].isdigit():
        raise Invalid(
            f"package relation {text!r} has the version {version!r}, which does not start with "
            "a digit (after any epoch); Debian versions look like '1.22', '2:1.0-3' or '1.0~rc1'"
        )
    return PackageRelation(name, op, version)


@dataclass(frozen=True)
class Constraint:
    """A version constraint on a package and the module that stated it."""

    op: RelationOp
    version: str
    source: str

    def __str__(self) -> str:
        return f"{self.op} {self.version} (from {self.source})"

    def document(self) -> dict[str, str]:
        """The constraint as JSON-ready data."""
        return {"op": self.op, "version": self.version, "source": self.source}


@dataclass(frozen=True)
class PackageConflict:
    """A package whose constraints no single version satisfies."""

    package: str
    constraints: tuple[Constraint, ...]
    reason: str

    @property
    def message(self) -> str:
        """A sentence for a person: the package, every constraint with its source, and why."""
        listed = ", ".join(str(c) for c in self.constraints)
        return f"package '{self.package}': no version satisfies {listed}: {self.reason}"

    def document(self) -> dict[str, Any]:
        """The conflict as JSON-ready data."""
        return {
            "package": self.package,
            "constraints": [c.document() for c in self.constraints],
            "message": self.message,
        }


@dataclass(frozen=True)
class PackageSet:
    """Every package the modules need, its version constraints, and the conflicts among them.

    `packages` maps each package, in order of first mention, to its version constraints (empty:
    any version). `sources` names, for each package, the modules that list it.
    """

    packages: dict[str, list[Constraint]]
    sources: dict[str, list[str]]
    conflicts: list[PackageConflict]

    def document(self) -> dict[str, Any]:
        """The set as JSON-ready data: each package with its constraints and sources."""
        return {
            "packages": [
                {
                    "name": name,
                    "constraints": [c.document() for c in constraints],
                    "sources": self.sources[name],
                }
                for name, constraints in self.packages.items()
            ],
            "conflicts": [conflict.document() for conflict in self.conflicts],
        }


def merge_packages(entries: Iterable[tuple[str, ModuleSpec]]) -> PackageSet:
    """Collect the packages of `(module name, spec)` entries and find unsatisfiable ones."""
    packages: dict[str, list[Constraint]] = {}
    sources: dict[str, list[str]] = {}
    for module, spec in entries:
        for relation in spec.package_relations:
            constraints = packages.setdefault(relation.name, [])
            modules = sources.setdefault(relation.name, [])
            if module not in modules:
                modules.append(module)
            if relation.op is not None and relation.version is not None:
                constraint = Constraint(relation.op, relation.version, module)
                if constraint not in constraints:
                    constraints.append(constraint)
    conflicts = []
    for name, constraints in packages.items():
        reason = _unsatisfiable(constraints)
        if reason is not None:
            conflicts.append(PackageConflict(name, tuple(constraints), reason))
    return PackageSet(packages=packages, sources=sources, conflicts=conflicts)


@dataclass(frozen=True)
class _Bound:
    version: DebianVersion
    inclusive: bool
    constraint: Constraint


def _unsatisfiable(constraints: list[Constraint]) -> str | None:
    """Why the intersection of the constraints' intervals is empty, or None if it is not."""
    lower: _Bound | None = None
    upper: _Bound | None = None
    for constraint in constraints:
        version = DebianVersion(constraint.version)
        if constraint.op in (">=", ">>", "="):
            bound = _Bound(version, constraint.op != ">>", constraint)
            if lower is None or _tighter_lower(bound, lower):
                lower = bound
        if constraint.op in ("<=", "<<", "="):
            bound = _Bound(version, constraint.op != "<<", constraint)
            if upper is None or _tighter_upper(bound, upper):
                upper = bound
    if lower is None or upper is None:
        return None
    if lower.version < upper.version:
        return None
    if lower.version == upper.version and lower.inclusive and upper.inclusive:
        return None
    return (
        f"{lower.constraint.op} {lower.constraint.version} from {lower.constraint.source} "
        f"and {upper.constraint.op} {upper.constraint.version} from {upper.constraint.source} "
        "exclude each other"
    )


def _tighter_lower(new: _Bound, old: _Bound) -> bool:
    return new.version > old.version or (
        new.version == old.version and old.inclusive and not new.inclusive
    )


def _tighter_upper(new: _Bound, old: _Bound) -> bool:
    return new.version < old.version or (
        new.version == old.version and old.inclusive and not new.inclusive
    )
