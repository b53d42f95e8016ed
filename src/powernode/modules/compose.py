"""Composition: stacking resolved module layers into one tree, with masks, `extends`
overrides, conflicts and the footprint.

Layers apply lower to upper. Before a module's own entries land, its `mask` hides matching
paths contributed by the modules below it (a masked directory hides everything in it). A path
provided again by an upper module is fine when both agree (type, content, mode, owner); when
they differ, the upper module wins if it `extends` the lower one (directly or through its
parents), and otherwise it is a conflict: both sources are reported and the lower entry stays.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.filters import FilterRules
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
class Composition:
    layers: list[Layer]
    entries: dict[str, tuple[Entry, str]] = field(default_factory=dict)
    """path -> (entry, the module it comes from)."""
    conflicts: list[PathConflict] = field(default_factory=list)
    masked: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """masking module -> [(path, module it hid)]."""
    overridden: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """extending module -> [(path, module it overrode)]."""

    def sorted_entries(self) -> list[Entry]:
        return [self.entries[p][0] for p in sorted(self.entries)]

    def footprint(self) -> dict[str, Any]:
        by_module: dict[str, dict[str, int]] = {
            f"{layer.name}@{layer.version}": {"files": 0, "bytes": 0} for layer in self.layers
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
        return {
            "files": counts[FILE],
            "directories": counts[DIR],
            "symlinks": counts[SYMLINK],
            "bytes": total,
            "packages": packages.document(),
            "modules": [{"module": m, **c} for m, c in by_module.items()],
            "masks": [
                {"module": m, "removed": len(hidden), "paths": [p for p, _ in hidden[:50]]}
                for m, hidden in self.masked.items()
            ],
            "overrides": [
                {"module": m, "overridden": len(paths), "paths": [p for p, _ in paths[:50]]}
                for m, paths in self.overridden.items()
            ],
        }


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
    ancestors = _ancestors(result.layers)
    tree = result.entries
    for layer, entries in layers:
        label = f"{layer.name}@{layer.version}"
        rules = _mask_rules(layer.spec, label)
        if rules is not None:
            _apply_mask(result, rules, label)
        extended = ancestors[layer.name]
        for entry in entries:
            present = tree.get(entry.path)
            if present is None:
                tree[entry.path] = (entry, label)
                continue
            lower, source = present
            if lower.same_as(entry):
                continue
            if source.split("@", 1)[0] in extended:
                tree[entry.path] = (entry, label)
                result.overridden.setdefault(label, []).append((entry.path, source))
            else:
                result.conflicts.append(
                    PathConflict(entry.path, source, label, lower.difference(entry))
                )
    return result


def _apply_mask(result: Composition, rules: FilterRules, label: str) -> None:
    tree = result.entries
    paths = sorted(tree)  # a directory sorts right before its contents
    limit = rules.depth_limit
    if limit is None:  # a rule may match at any depth: ask about every path
        dropped = rules.unselected((p, tree[p][0].type == DIR) for p in paths)
    else:
        # Only paths up to `limit` components deep can match; deeper ones go with a dropped
        # ancestor, found by range in the sorted list instead of asking the rules.
        shallow = [p for p in paths if p.count("/") < limit]
        top = rules.unselected((p, tree[p][0].type == DIR) for p in shallow)
        found = dict.fromkeys(top)
        for path in top:
            if tree[path][0].type == DIR:
                start = bisect.bisect_left(paths, path + "/")
                end = bisect.bisect_left(paths, path + "0")  # '0' follows '/'
                found.update(dict.fromkeys(paths[start:end]))
        dropped = sorted(found)
    if dropped:
        result.masked[label] = [(path, tree.pop(path)[1]) for path in dropped]
