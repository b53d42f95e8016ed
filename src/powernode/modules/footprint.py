"""The footprint of a composed template, as the preview API returns it.

Counts are exact. Path lists are capped at `PATH_LIMIT` (sorted, so the same template always
shows the same sample) to keep a live preview's response small: a mask over /usr/share/doc can
remove tens of thousands of paths. `paths_truncated` says when a list was cut; the count beside
it and `by_module` stay exact.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence
from typing import Any, TypedDict

from pydantic import BaseModel, Field

PATH_LIMIT = 50


class ModuleContribution(BaseModel):
    """What one module's entries add to the composed tree (after masks, overrides, conflicts)."""

    module: str
    files: int
    bytes: int


class PathSources(BaseModel):
    path: str
    modules: list[str] = Field(description="The modules whose entries went, lower first.")


class ModulePaths(BaseModel):
    module: str
    paths: int = Field(description="How many paths of this module went.")


class MaskReport(BaseModel):
    """What one module's `mask` removed from the modules below it."""

    module: str
    removed: int = Field(description="Every path removed, exactly.")
    paths: list[str] = Field(description=f"The first {PATH_LIMIT} removed paths, sorted.")
    paths_truncated: bool = Field(default=False, description="`paths` is shorter than `removed`.")
    sources: list[PathSources] = Field(
        default_factory=list, description="The same paths as `paths`, each with its modules."
    )
    by_module: list[ModulePaths] = Field(
        default_factory=list, description="For each lower module, how many of its paths went."
    )


class OverrideReport(BaseModel):
    """What one module replaced in the modules it `extends`, directly or through its parents.

    A directory replaced by a file or symlink takes everything under it along: those paths are
    counted here too.
    """

    module: str
    overridden: int = Field(description="Every path overridden, exactly.")
    paths: list[str] = Field(description=f"The first {PATH_LIMIT} overridden paths, sorted.")
    paths_truncated: bool = Field(
        default=False, description="`paths` is shorter than `overridden`."
    )
    sources: list[PathSources] = Field(
        default_factory=list, description="The same paths as `paths`, each with its modules."
    )
    by_module: list[ModulePaths] = Field(
        default_factory=list, description="For each parent module, how many of its paths went."
    )


class Footprint(BaseModel):
    files: int
    directories: int
    symlinks: int
    bytes: int
    packages: dict[str, Any] = Field(
        description="Merged Debian packages and the constraints that cannot all hold."
    )
    modules: list[ModuleContribution]
    masks: list[MaskReport]
    overrides: list[OverrideReport]


class PathSample(TypedDict):
    """The fields a mask or override report shares, beside its exact count."""

    paths: list[str]
    paths_truncated: bool
    sources: list[PathSources]
    by_module: list[ModulePaths]


def path_report(
    removed: Sequence[tuple[str, tuple[str, ...]]], order: dict[str, int]
) -> PathSample:
    """The sample paths, whether they were cut, the sample with sources, and per-module counts of
    `removed`: (path, modules it came from) pairs, one per path. `order` sorts modules lower
    first. The exact count is `len(removed)`."""
    sample = heapq.nsmallest(PATH_LIMIT, removed)
    per_module = Counter(module for _, modules in removed for module in modules)
    return PathSample(
        paths=[path for path, _ in sample],
        paths_truncated=len(removed) > len(sample),
        sources=[PathSources(path=path, modules=list(modules)) for path, modules in sample],
        by_module=[
            ModulePaths(module=module, paths=count)
            for module, count in sorted(per_module.items(), key=lambda item: order[item[0]])
        ],
    )
