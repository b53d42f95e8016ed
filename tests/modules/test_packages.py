"""Merging the Debian packages of several modules and finding unsatisfiable constraints."""

from __future__ import annotations

import pytest
from debian.debian_support import Version as DebianVersion

from powernode.errors import Invalid
from powernode.modules.packages import (
    Constraint,
    PackageRelation,
    merge_packages,
    parse_package_relation,
)
from powernode.modules.spec import ModuleSpec


def module(name: str, *packages: str) -> tuple[str, ModuleSpec]:
    return name, ModuleSpec(packages=list(packages))


def test_merge_collects_constraints_and_sources_in_order() -> None:
    """Each package keeps its constraints with sources, in order of first mention."""
    merged = merge_packages(
        [
            module("base", "ca-certificates", "nginx (>= 1.22)"),
            module("web", "nginx (<< 2)", "curl"),
        ]
    )
    assert list(merged.packages) == ["ca-certificates", "nginx", "curl"]
    assert merged.packages["ca-certificates"] == []
    assert merged.packages["nginx"] == [
        Constraint(">=", "1.22", "base"),
        Constraint("<<", "2", "web"),
    ]
    assert merged.sources["nginx"] == ["base", "web"]
    assert merged.conflicts == []


def test_repeated_constraint_is_kept_once() -> None:
    """The same constraint from the same module is not duplicated."""
    merged = merge_packages([module("a", "nginx (>= 1)", "nginx (>= 1)")])
    assert merged.packages["nginx"] == [Constraint(">=", "1", "a")]


def test_equal_pins_agree() -> None:
    """Two modules pinning the same version are compatible."""
    merged = merge_packages([module("a", "nginx (= 1.22-1)"), module("b", "nginx (= 1.22-1)")])
    assert merged.conflicts == []


def test_different_pins_conflict() -> None:
    """Two different pins on one package conflict."""
    merged = merge_packages([module("a", "nginx (= 1.22-1)"), module("b", "nginx (= 1.24-1)")])
    assert [c.package for c in merged.conflicts] == ["nginx"]


def test_pin_outside_a_range_conflicts() -> None:
    """A pin must fall inside every range."""
    merged = merge_packages([module("a", "nginx (= 1.20)"), module("b", "nginx (>= 1.22)")])
    assert len(merged.conflicts) == 1


def test_pin_inside_a_range_is_fine() -> None:
    """A pin inside every range is compatible."""
    merged = merge_packages(
        [module("a", "nginx (= 1.22)"), module("b", "nginx (>= 1.22)", "nginx (<< 2)")]
    )
    assert merged.conflicts == []


def test_conflicting_ranges_name_every_constraint_and_source() -> None:
    """`>= 2` and `<< 1.5` exclude each other; the message names both and their modules."""
    merged = merge_packages(
        [module("app", "libfoo (>= 2)"), module("web", "libfoo (<< 1.5)", "curl")]
    )
    (conflict,) = merged.conflicts
    assert conflict.package == "libfoo"
    assert conflict.message == (
        "package 'libfoo': no version satisfies >= 2 (from app), << 1.5 (from web): "
        ">= 2 from app and << 1.5 from web exclude each other"
    )
    assert merged.document()["conflicts"][0]["constraints"] == [
        {"op": ">=", "version": "2", "source": "app"},
        {"op": "<<", "version": "1.5", "source": "web"},
    ]


@pytest.mark.parametrize(
    "constraints",
    [
        ("libfoo (>= 1.0)", "libfoo (<< 2.0)"),
        ("libfoo (>= 1.0)", "libfoo (<= 1.0)"),
        ("libfoo (>> 1.0)", "libfoo (>= 0.5)"),
        ("libfoo (<< 1.0)", "libfoo (<= 3.0)"),
        ("libfoo (>= 1.0~rc1)", "libfoo (<< 1.0)"),
    ],
)
def test_compatible_ranges(constraints: tuple[str, str]) -> None:
    """Ranges with a common version do not conflict."""
    merged = merge_packages([module("a", constraints[0]), module("b", constraints[1])])
    assert merged.conflicts == []


@pytest.mark.parametrize(
    "constraints",
    [
        ("libfoo (>> 1.0)", "libfoo (<= 1.0)"),
        ("libfoo (>= 1.0)", "libfoo (<< 1.0)"),
        ("libfoo (>= 1.0)", "libfoo (<< 1.0~rc1)"),
        ("libfoo (>= 1:0.9)", "libfoo (<< 2.0)"),
    ],
)
def test_touching_or_crossing_ranges_conflict(constraints: tuple[str, str]) -> None:
    """Ranges that only touch at an excluded end, or cross, conflict."""
    merged = merge_packages([module("a", constraints[0]), module("b", constraints[1])])
    assert len(merged.conflicts) == 1


def test_tilde_sorts_before_release() -> None:
    """Debian ordering: `1.0~rc1` is lower than `1.0`."""
    assert DebianVersion("1.0~rc1") < DebianVersion("1.0")
    merged = merge_packages([module("a", "libfoo (<< 1.0)"), module("b", "libfoo (= 1.0~rc1)")])
    assert merged.conflicts == []


def test_epoch_outranks_upstream_version() -> None:
    """Debian ordering: epoch 1 makes `1:0.9` higher than `2.0`."""
    assert DebianVersion("1:0.9") > DebianVersion("2.0")
    merged = merge_packages([module("a", "libfoo (>= 2.0)"), module("b", "libfoo (= 1:0.9)")])
    assert merged.conflicts == []


def test_numeric_comparison_of_version_parts() -> None:
    """Debian ordering compares digits numerically: `1.10` is above `1.9`."""
    merged = merge_packages([module("a", "libfoo (>= 1.10)"), module("b", "libfoo (<< 1.9)")])
    assert len(merged.conflicts) == 1


def test_document_lists_packages_with_sources() -> None:
    """The JSON form lists each package with its constraints and modules."""
    merged = merge_packages([module("a", "curl"), module("b", "curl (>= 8)")])
    assert merged.document() == {
        "packages": [
            {
                "name": "curl",
                "constraints": [{"op": ">=", "version": "8", "source": "b"}],
                "sources": ["a", "b"],
            }
        ],
        "conflicts": [],
    }


def test_parse_package_relation() -> None:
    """A relation parses into name, operator and version, and prints normalized."""
    relation = parse_package_relation("libc6( >=2.36 )")
    assert relation == PackageRelation("libc6", ">=", "2.36")
    assert str(relation) == "libc6 (>= 2.36)"
    assert parse_package_relation("g++") == PackageRelation("g++")


def test_parse_package_relation_rejects_invalid_debian_version() -> None:
    """A version with characters Debian forbids is rejected."""
    with pytest.raises(Invalid, match="invalid Debian version"):
        parse_package_relation("nginx (>= 1.0:2)")
