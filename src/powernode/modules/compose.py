"""Composition: stacking resolved module layers into one tree, with masks, `extends`
overrides, conflicts and the footprint.

Layers apply lower to upper. Before a module's own entries land, its `mask` hides matching
paths contributed by the modules below it (a masked directory hides everything in it).

Every module providing a path stays a provider of it until a mask hides the path or an
override replaces its entry. A module's entry is judged against each provider present when it
lands:
- the same (type, content, mode, owner; mtime does not count): fine, it joins them;
- different, and the module `extends` that provider (directly or through its parents): an
  override; the provider's entry is replaced, so modules above are judged against the new one;
- different otherwise: a conflict, reported with both sources, one per differing pair.

So with a, b and c each providing x differently, the report holds (a,b), (a,c) and (b,c). If b
conflicts with a and c extends b, c overrides b and is still judged against a: c extends b, not
a, so c differing from a is a conflict unless c masks x (which hides a's and b's x before c's
lands). The issue's rule is about pairs ("neither masks nor extends the other"), so a conflict
stays reported even when a module above masks or overrides the path: it is fixed in one of the
two modules (a mask in the upper one, or `extends`), not papered over by a third.

The tree shows the lowest provider's entry (a conflict leaves it in place) unless a module
overrides it. A directory replaced by a file or symlink takes its whole subtree along (those
paths are counted under the override), so the tree never holds a path under a non-directory.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.filters import FilterRules
from powernode.modules.footprint import (
    Footprint,
    MaskReport,
    ModuleContribution,
    OverrideReport,
    path_report,
)
from powernode.modules.packages import merge_packages
from powernode.modules.spec import ModuleSpec


class Layer(Protocol):
    """What composition needs of a resolved module."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def spec(self) -> ModuleSpec: ...


@dataclass(frozen=True)
class PathConflict:
    path: str
    lower: str
    upper: str
    difference: str

    def document(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lower": self.lower,
            "upper": self.upper,
            "difference": self.difference,
        }


@dataclass
class _Variant:
    """One distinct entry at a path and the modules providing it, lower first."""

    entry: Entry
    modules: list[str]


Removed = list[tuple[str, tuple[str, ...]]]
"""(path, the modules whose entries went), one per path."""


@dataclass
class Composition:
    layers: list[Layer]
    entries: dict[str, tuple[Entry, str]] = field(default_factory=dict)
    """path -> (entry, the module it comes from)."""
    conflicts: list[PathConflict] = field(default_factory=list)
    masked: dict[str, Removed] = field(default_factory=dict)
    """masking module -> what it hid."""
    overridden: dict[str, Removed] = field(default_factory=dict)
    """extending module -> what it replaced."""
    order: dict[str, int] = field(default_factory=dict)
    """module -> its position, lowest first."""
    shared: dict[str, list[_Variant]] = field(default_factory=dict, repr=False)
    """Every provider of each path that more than one module provides. Most paths have one
    provider; keeping them out of here keeps the common case to one dict insert."""

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[p][0] for p in sorted(self.entries)]

    def remove(self, path: str) -> tuple[str, ...]:
        """Take `path` out of the tree; the modules that provided it, lower first."""
        _, source = self.entries.pop(path)
        variants = self.shared.pop(path, None)
        if variants is None:
            return (source,)
        modules = (m for variant in variants for m in variant.modules)
        return tuple(sorted(modules, key=self.order.__getitem__))

    def footprint(self) -> Footprint:
        by_module: dict[str, dict[str, int]] = {
            label: {"files": 0, "bytes": 0} for label in self.order
        }
        counts = {FILE: 0, DIR: 0, SYMLINK: 0}
        total = 0
        for entry, source in self.entries.values():
            counts[entry.type] += 1
            if entry.type == FILE:
                total += entry.size
                by_module[source]["files"] += 1
                by_module[source]["bytes"] += entry.size
        packages = merge_packages([(layer.name, layer.spec) for layer in self.layers])
        masks = [
            MaskReport(module=module, removed=len(hidden), **path_report(hidden, self.order))
            for module, hidden in self.masked.items()
        ]
        overrides = [
            OverrideReport(
                module=module, overridden=len(replaced), **path_report(replaced, self.order)
            )
            for module, replaced in self.overridden.items()
        ]
        return Footprint(
            files=counts[FILE],
            directories=counts[DIR],
            symlinks=counts[SYMLINK],
            bytes=total,
            packages=packages.document(),
            modules=[ModuleContribution(module=m, **c) for m, c in by_module.items()],
            masks=masks,
            overrides=overrides,
        )


def extends_name(spec: ModuleSpec) -> str | None:
    """The parent module's name from `extends` ("docker" or "docker >=24")."""
    parent = spec.parent
    return parent.name if parent is not None else None


def _ancestors(layers: list[Layer]) -> dict[str, set[str]]:
    """For each module, every module it extends, directly or through its parents."""
    parent = {layer.name: extends_name(layer.spec) for layer in layers}
    result: dict[str, set[str]] = {}
    for name in parent:
        seen: set[str] = set()
        current = parent.get(name)
        while current is not None and current not in seen:
            seen.add(current)
            current = parent.get(current)
        result[name] = seen
    return result


def _mask_rules(spec: ModuleSpec, module: str) -> FilterRules | None:
    if not spec.mask:
        return None
    return FilterRules.parse(
        "\n".join(f"- {pattern}" for pattern in spec.mask), source=f"{module} mask"
    )


def compose(layers: Sequence[tuple[Layer, Sequence[Entry]]]) -> Composition:
    """Stack `layers` (lower first) into one tree."""
    result = Composition(layers=[layer for layer, _ in layers])
    result.order = {f"{layer.name}@{layer.version}": i for i, layer in enumerate(result.layers)}
    ancestors = _ancestors(result.layers)
    tree, shared = result.entries, result.shared
    for layer, entries in layers:
        label = f"{layer.name}@{layer.version}"
        rules = _mask_rules(layer.spec, label)
        if rules is not None:
            _apply_mask(result, rules, label)
        extended = ancestors[layer.name]
        emptied = []  # directories this layer replaced by files or symlinks
        for entry in entries:
            present = tree.get(entry.path)
            if present is None:
                tree[entry.path] = (entry, label)
                continue
            # Inline, the usual overlap: a path every provider has alike so far.
            variants = shared.get(entry.path)
            if variants is not None and len(variants) == 1 and variants[0].entry.same_as(entry):
                variants[0].modules.append(label)
            elif _land(result, entry, label, extended, present):
                emptied.append(entry.path)
        if emptied:
            gone = _under(sorted(tree), emptied)
            result.overridden[label].extend((path, result.remove(path)) for path in gone)
    return result


def _land(
    result: Composition,
    entry: Entry,
    label: str,
    extended: set[str],
    present: tuple[Entry, str],
) -> bool:
    """Judge `entry` against every provider of its path (see the module docstring). True when
    it replaced a directory in the tree by a non-directory, whose subtree must then go."""
    path = entry.path
    variants = result.shared.get(path)
    if variants is None:
        lower, source = present
        if lower.same_as(entry):  # the usual overlap: directories every module carries
            result.shared[path] = [_Variant(lower, [source, label])]
            return False
        variants = result.shared[path] = [_Variant(lower, [source])]
    joined = False
    overrode: list[str] = []
    for variant in variants:
        if variant.entry.same_as(entry):
            variant.modules.append(label)
            joined = True
            continue
        kept = []
        for source in variant.modules:
            if source.split("@", 1)[0] in extended:
                overrode.append(source)
            else:
                kept.append(source)
                difference = variant.entry.difference(entry)
                result.conflicts.append(PathConflict(path, source, label, difference))
        variant.modules = kept
    if not joined:
        variants.append(_Variant(entry, [label]))
    if not overrode:
        return False
    variants[:] = [variant for variant in variants if variant.modules]
    overrode.sort(key=result.order.__getitem__)
    result.overridden.setdefault(label, []).append((path, tuple(overrode)))
    winner, source = present
    if source not in overrode:  # the tree keeps a provider this module does not extend
        return False
    result.entries[path] = (entry, label)
    return winner.type == DIR and entry.type != DIR


def _under(paths: list[str], roots: Iterable[str]) -> list[str]:
    """The paths of sorted `paths` strictly inside any of `roots`, sorted, each once."""
    found: dict[str, None] = {}
    for root in roots:
        # Every path inside `root` starts with root + "/", so sorted, they are exactly the
        # paths from root + "/" up to root + "0" ('0' is the character after '/').
        start = bisect.bisect_left(paths, root + "/")
        end = bisect.bisect_left(paths, root + "0")
        found.update(dict.fromkeys(paths[start:end]))
    return sorted(found)


def _apply_mask(result: Composition, rules: FilterRules, label: str) -> None:
    tree = result.entries
    paths = sorted(tree)
    limit = rules.depth_limit
    if limit is None:  # a rule may match at any depth: ask about every path
        dropped = rules.unselected((p, tree[p][0].type == DIR) for p in paths)
    else:
        # Only paths up to `limit` components deep can match; deeper ones go with a dropped
        # ancestor, found by range in the sorted list instead of asking the rules.
        shallow = [p for p in paths if p.count("/") < limit]
        top = rules.unselected((p, tree[p][0].type == DIR) for p in shallow)
        inside = _under(paths, [p for p in top if tree[p][0].type == DIR])
        dropped = sorted({*top, *inside})
    if dropped:
        result.masked[label] = [(path, result.remove(path)) for path in dropped]
