"""Resolve a template (module versions chosen by the operator) into the full ordered layer list.

Contract of `resolve`:

- Every template entry must name a module and version in the catalog; a module may appear in the
  template only once.
- Dependencies and `extends` parents missing from the template are added automatically, at the
  highest catalog version that satisfies every range on them (all dependents' ranges combined;
  PEP 440 rules, so pre-releases count only when a range names one or nothing else fits).
- A module listed in the template is never changed: it must satisfy every range on it.
- The result is ordered lower to upper: every module above its dependencies and its parent. It is
  a depth-first post-order seeded by template order, so template order is kept wherever the
  dependencies allow, each auto-added module sits just below its first dependent, and a parent
  sits directly below its child (dependencies first, then the parent).

Resolution iterates to a fixed point rather than searching: each round walks the modules from the
template, picking for each auto-added module the highest version allowed by the ranges seen so far
(or its pick from the previous round, if still allowed); at the end of the round every pick is
recomputed against all the ranges of the round, and the round repeats until nothing changes.
A round is needed again because a newly picked version brings its own dependencies, which may
tighten ranges on modules already picked. We deliberately do not backtrack through alternative
versions: templates are short lists an operator curates, a search could pick surprising old
versions silently, and a conflict reported with every range and its source is easy to act on (pin a
version in the template or change a range). The price is that the rare case where only an older
version of some auto-added module would avoid a conflict is reported rather than solved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from powernode.errors import Invalid
from powernode.modules.spec import ModuleRequirement, ModuleSpec, check_module_name, parse_version

VersionRef = TypeVar("VersionRef", str, Version)


class Catalog(Protocol[VersionRef]):
    """The module versions available to templates.

    A catalog names versions either by their text (`"24.0.7"`, kept as written in the results) or
    by `packaging.version.Version` (reported in its normalized form); `spec` receives back exactly
    what `versions` gave.
    """

    def versions(self, name: str) -> Sequence[VersionRef]:
        """The versions of module `name`; empty if there is no such module."""
        ...

    def spec(self, name: str, version: VersionRef) -> ModuleSpec:
        """The spec of one version, `version` being one of `versions(name)`."""
        ...


def check_distinct_versions(name: str, texts: Iterable[str]) -> None:
    """Invalid when two of `texts` are the same PEP 440 version (`1.1` and `1.1.0`): the
    resolver keys versions by value, so it could not tell them apart."""
    seen: dict[Version, str] = {}
    for text in texts:
        version = parse_version(text)
        if version in seen:
            raise Invalid(
                f"module '{name}' has versions {seen[version]!r} and {text!r}, which are "
                "the same version; keep one",
                module=name,
                versions=[seen[version], text],
            )
        seen[version] = text


class MemoryCatalog:
    """A catalog held in memory: module name -> version text -> spec."""

    def __init__(self, modules: Mapping[str, Mapping[str, ModuleSpec]]) -> None:
        for name, versions in modules.items():
            check_module_name(name)
            check_distinct_versions(name, versions)
        self._modules = {name: dict(versions) for name, versions in modules.items()}

    def versions(self, name: str) -> list[str]:
        """The versions of `name` as written; empty if the module is unknown."""
        return list(self._modules.get(name, {}))

    def spec(self, name: str, version: str) -> ModuleSpec:
        """The spec of one version."""
        return self._modules[name][version]


@dataclass(frozen=True)
class ResolvedModule:
    """One layer of a resolved template."""

    name: str
    version: str
    """As written in the catalog."""
    spec: ModuleSpec
    explicit: bool
    """Listed in the template, as opposed to added for a dependent."""
    required_by: list[str]
    """The modules that depend on or extend this one, lower to upper."""


EdgeKind = Literal["requires", "extends"]


@dataclass(frozen=True)
class _Pick:
    name: str
    version: Version
    text: str
    spec: ModuleSpec


@dataclass(frozen=True)
class _Edge:
    """A range that one placed module puts on another."""

    source: _Pick
    target: str
    specifier: SpecifierSet
    kind: EdgeKind

    def __str__(self) -> str:
        rng = f" {self.specifier}" if str(self.specifier) else " (any version)"
        return f"{self.source.name} {self.source.text} {self.kind} {self.target}{rng}"


def _requirements(spec: ModuleSpec) -> list[tuple[ModuleRequirement, EdgeKind]]:
    """Dependencies in declared order, then the parent: the parent ends up directly below."""
    found: list[tuple[ModuleRequirement, EdgeKind]] = [(r, "requires") for r in spec.depends_on]
    if spec.parent is not None:
        found.append((spec.parent, "extends"))
    return found


class _Index(Generic[VersionRef]):
    """The catalog's versions, parsed and sorted once per resolution."""

    def __init__(self, catalog: Catalog[VersionRef]) -> None:
        self._catalog: Catalog[VersionRef] = catalog
        self._versions: dict[str, list[tuple[Version, str]]] = {}
        self._refs: dict[tuple[str, Version], VersionRef] = {}
        self._picks: dict[tuple[str, Version], _Pick] = {}

    def available(self, name: str) -> list[tuple[Version, str]]:
        if name not in self._versions:
            parsed = []
            for ref in self._catalog.versions(name):
                version = ref if isinstance(ref, Version) else parse_version(ref)
                self._refs[name, version] = ref
                parsed.append((version, str(ref)))
            self._versions[name] = sorted(parsed)
        return self._versions[name]

    def listing(self, name: str) -> str:
        return ", ".join(text for _, text in self.available(name)) or "none"

    def pick(self, name: str, version: Version) -> _Pick:
        key = (name, version)
        if key not in self._picks:
            text = next(t for v, t in self.available(name) if v == version)
            spec = self._catalog.spec(name, self._refs[key])
            self._picks[key] = _Pick(name, version, text, spec)
        return self._picks[key]

    def best(self, name: str, ranges: Sequence[SpecifierSet]) -> Version | None:
        combined = _combine(ranges)
        allowed = list(combined.filter(v for v, _ in self.available(name)))
        return max(allowed) if allowed else None

    def allows(self, name: str, ranges: Sequence[SpecifierSet], version: Version) -> bool:
        return version in _combine(ranges).filter(v for v, _ in self.available(name))


def _combine(ranges: Sequence[SpecifierSet]) -> SpecifierSet:
    combined = SpecifierSet()
    for specifier in ranges:
        combined &= specifier
    return combined


@dataclass
class _Round:
    placed: dict[str, _Pick]
    edges: list[_Edge]

    def edges_to(self, name: str) -> list[_Edge]:
        return [edge for edge in self.edges if edge.target == name]


def resolve(template: list[tuple[str, str]], catalog: Catalog[VersionRef]) -> list[ResolvedModule]:
    """Resolve `(module name, exact version)` entries, lowest layer first, into every layer."""
    index: _Index[VersionRef] = _Index(catalog)
    explicit = _template_picks(template, index)
    hints: dict[str, Version] = {}
    seen: set[frozenset[tuple[str, Version]]] = set()
    while True:
        current = _walk(explicit, hints, index)
        best: dict[str, Version] = {}
        stuck: list[str] = []
        for name in current.placed:
            if name in explicit:
                continue
            choice = index.best(name, [edge.specifier for edge in current.edges_to(name)])
            if choice is None:
                stuck.append(name)
            else:
                best[name] = choice
        if all(best[name] == current.placed[name].version for name in best):
            if stuck:
                raise _unsatisfiable(stuck[0], current, index)
            _check_explicit(explicit, current, index)
            break
        state = frozenset(best.items())
        if state in seen:
            changing = sorted(n for n in best if best[n] != current.placed[n].version)
            raise Invalid(
                "the versions of " + ", ".join(changing) + " keep changing: each newest "
                "allowed version brings dependencies that rule it out again; pin "
                + " or ".join(changing)
                + " in the template",
                modules=changing,
            )
        seen.add(state)
        hints = best
    return _ordered(template, explicit, current)


def _template_picks(template: list[tuple[str, str]], index: _Index[Any]) -> dict[str, _Pick]:
    explicit: dict[str, _Pick] = {}
    position: dict[str, int] = {}
    for number, (name, text) in enumerate(template, start=1):
        where = f"template entry {number} ({name} {text})"
        if name in explicit:
            first = position[name]
            raise Invalid(
                f"module '{name}' is listed twice: template entry {first} ({name} "
                f"{template[first - 1][1]}) and {where}; a module may appear only once",
                module=name,
            )
        try:
            version = parse_version(text)
        except Invalid as error:
            raise Invalid(f"{where}: {error.detail}", module=name) from None
        if not index.available(name):
            raise Invalid(f"{where}: module '{name}' is not in the catalog", module=name)
        if all(v != version for v, _ in index.available(name)):
            raise Invalid(
                f"{where}: module '{name}' has no version {text}; available: "
                + index.listing(name),
                module=name,
            )
        explicit[name] = index.pick(name, version)
        position[name] = number
    return explicit


def _walk(explicit: dict[str, _Pick], hints: dict[str, Version], index: _Index[Any]) -> _Round:
    """Place every module reachable from the template, picking versions greedily."""
    current = _Round(placed={}, edges=[])
    ranges: dict[str, list[SpecifierSet]] = {}

    def visit(pick: _Pick) -> None:
        current.placed[pick.name] = pick
        for requirement, kind in _requirements(pick.spec):
            target = requirement.name
            current.edges.append(_Edge(pick, target, requirement.specifier, kind))
            ranges.setdefault(target, []).append(requirement.specifier)
            if target in current.placed:
                continue
            if target in explicit:
                visit(explicit[target])
                continue
            available = index.available(target)
            if not available:
                raise Invalid(
                    f"module '{target}' is not in the catalog, but {pick.name} {pick.text} "
                    f"{kind} it; add it to the catalog or change {pick.name}",
                    module=target,
                )
            hint = hints.get(target)
            if hint is not None and index.allows(target, ranges[target], hint):
                version = hint
            else:
                # With no allowed version, carry on with the newest; the round's end reports it.
                version = index.best(target, ranges[target]) or available[-1][0]
            visit(index.pick(target, version))

    for pick in explicit.values():
        if pick.name not in current.placed:
            visit(pick)
    return current


def _unsatisfiable(name: str, current: _Round, index: _Index[Any]) -> Invalid:
    edges = current.edges_to(name)
    combined = _combine([edge.specifier for edge in edges])
    return Invalid(
        f"no version of '{name}' satisfies every range on it: "
        + "; ".join(str(edge) for edge in edges)
        + f" (combined: {combined or 'any'}); available: {index.listing(name)}. "
        "Pin a version of a dependent in the template or change one of the ranges",
        module=name,
        ranges=[str(edge) for edge in edges],
    )


def _check_explicit(explicit: dict[str, _Pick], current: _Round, index: _Index[Any]) -> None:
    for name, pick in explicit.items():
        edges = current.edges_to(name)
        failing = [e for e in edges if not e.specifier.contains(pick.version, prereleases=True)]
        if not failing:
            continue
        described = "; ".join(
            f"{edge}{' (not satisfied)' if edge in failing else ''}" for edge in edges
        )
        raise Invalid(
            f"{name} {pick.text} in the template does not satisfy every range on it: "
            f"{described}. Choose another version of {name} (available: "
            f"{index.listing(name)}) or change the dependents",
            module=name,
            version=pick.text,
            ranges=[str(edge) for edge in edges],
        )


def _ordered(
    template: list[tuple[str, str]], explicit: dict[str, _Pick], current: _Round
) -> list[ResolvedModule]:
    """Depth-first post-order from the template entries; a back edge is a cycle."""
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise Invalid(
                "dependency cycle: " + " -> ".join(cycle) + "; a module cannot depend on or "
                "extend itself, directly or through others. Remove one of these links",
                cycle=cycle,
            )
        path.append(name)
        for requirement, _ in _requirements(current.placed[name].spec):
            visit(requirement.name)
        path.pop()
        done.add(name)
        order.append(name)

    for name, _ in template:
        visit(name)
    position = {name: number for number, name in enumerate(order)}
    dependents: dict[str, list[str]] = {name: [] for name in order}
    for edge in current.edges:
        if edge.source.name not in dependents[edge.target]:
            dependents[edge.target].append(edge.source.name)
    return [
        ResolvedModule(
            name=name,
            version=current.placed[name].text,
            spec=current.placed[name].spec,
            explicit=name in explicit,
            required_by=sorted(dependents[name], key=position.__getitem__),
        )
        for name in order
    ]
