"""Resolving templates into ordered layers against a catalog."""

from __future__ import annotations

from typing import Any

import pytest
from packaging.version import Version

from powernode.errors import Invalid
from powernode.modules.resolve import MemoryCatalog, ResolvedModule, resolve
from powernode.modules.spec import ModuleSpec


def spec(**overrides: Any) -> ModuleSpec:
    return ModuleSpec(**overrides)


def catalog(**modules: dict[str, ModuleSpec]) -> MemoryCatalog:
    return MemoryCatalog({name.replace("_", "-"): versions for name, versions in modules.items()})


def layers(result: list[ResolvedModule]) -> list[str]:
    return [f"{m.name}@{m.version}{'' if m.explicit else '*'}" for m in result]


def test_independent_modules_keep_template_order() -> None:
    """Modules without dependencies come out in template order."""
    cat = catalog(base={"1.0": spec()}, web={"2.0": spec()}, ssh={"1.0": spec()})
    result = resolve([("base", "1.0"), ("web", "2.0"), ("ssh", "1.0")], cat)
    assert layers(result) == ["base@1.0", "web@2.0", "ssh@1.0"]
    assert all(m.explicit and m.required_by == [] for m in result)


def test_dependency_listed_above_its_dependent_moves_below() -> None:
    """A template entry that another entry depends on is placed below it."""
    cat = catalog(app={"1.0": spec(dependencies={"base": ""})}, base={"1.0": spec()})
    result = resolve([("app", "1.0"), ("base", "1.0")], cat)
    assert layers(result) == ["base@1.0", "app@1.0"]
    assert result[0].required_by == ["app"]


def test_missing_dependency_is_added_just_below_its_first_dependent() -> None:
    """An unlisted dependency is added, explicit=False, below its first dependent."""
    cat = catalog(
        base={"1.0": spec()},
        app={"1.0": spec(dependencies={"certs": ">=1"})},
        web={"1.0": spec(dependencies={"certs": ""})},
        certs={"1.0": spec(), "1.5": spec()},
    )
    result = resolve([("base", "1.0"), ("app", "1.0"), ("web", "1.0")], cat)
    assert layers(result) == ["base@1.0", "certs@1.5*", "app@1.0", "web@1.0"]
    assert result[1].required_by == ["app", "web"]
    assert result[1].spec == spec()


def test_extends_chain_is_added_with_parents_directly_below() -> None:
    """`extends` parents are added recursively, each directly below its child."""
    cat = catalog(
        os={"1.0": spec()},
        docker={"24.0.7": spec(extends="os"), "25.0": spec(extends="os")},
        certs={"1.0": spec()},
        app={"1.0": spec(extends="docker >=24,<25", dependencies={"certs": ""})},
    )
    result = resolve([("app", "1.0")], cat)
    assert layers(result) == ["certs@1.0*", "os@1.0*", "docker@24.0.7*", "app@1.0"]
    assert result[2].required_by == ["app"]
    assert result[1].required_by == ["docker"]


def test_highest_version_satisfying_every_range_is_picked() -> None:
    """An added module gets the newest version inside all its dependents' ranges."""
    versions = {v: spec() for v in ["1.0", "1.4", "1.9", "2.0", "3.0rc1"]}
    cat = catalog(
        lib=versions,
        a={"1.0": spec(dependencies={"lib": ">=1.2"})},
        b={"1.0": spec(dependencies={"lib": "<2"})},
    )
    result = resolve([("a", "1.0"), ("b", "1.0")], cat)
    assert layers(result) == ["lib@1.9*", "a@1.0", "b@1.0"]


def test_prerelease_is_not_picked_unless_requested() -> None:
    """PEP 440: pre-releases count only when a range names one."""
    cat = catalog(
        lib={"1.0": spec(), "2.0rc1": spec()},
        a={"1.0": spec(dependencies={"lib": ""})},
        b={"1.0": spec(dependencies={"lib": ">=2.0rc1"})},
    )
    assert layers(resolve([("a", "1.0")], cat))[0] == "lib@1.0*"
    assert layers(resolve([("b", "1.0")], cat))[0] == "lib@2.0rc1*"


def test_new_dependency_tightens_a_range_picked_earlier() -> None:
    """A module added later narrows the range of one already picked; resolution repeats."""
    cat = catalog(
        lib={"1.0": spec(), "2.0": spec()},
        a={"1.0": spec(dependencies={"lib": ""})},
        b={"1.0": spec(dependencies={"helper": ""})},
        helper={"1.0": spec(dependencies={"lib": "<2"})},
    )
    result = resolve([("a", "1.0"), ("b", "1.0")], cat)
    assert layers(result) == ["lib@1.0*", "a@1.0", "helper@1.0*", "b@1.0"]


def test_dependencies_of_a_version_no_longer_picked_are_dropped() -> None:
    """When a newer version is ruled out, what only it needed disappears."""
    cat = catalog(
        lib={"1.0": spec(), "2.0": spec(dependencies={"extra": ""})},
        extra={"1.0": spec()},
        a={"1.0": spec(dependencies={"lib": ""})},
        b={"1.0": spec(dependencies={"lib": "<2"})},
    )
    result = resolve([("a", "1.0"), ("b", "1.0")], cat)
    assert layers(result) == ["lib@1.0*", "a@1.0", "b@1.0"]


def test_explicit_version_violating_a_range_names_every_dependent() -> None:
    """A template version outside a dependent's range is an error naming each range."""
    cat = catalog(
        docker={"23.0": spec(), "24.0": spec()},
        app={"1.0": spec(dependencies={"docker": ">=24"})},
        web={"1.0": spec(extends="docker")},
    )
    with pytest.raises(Invalid) as caught:
        resolve([("docker", "23.0"), ("app", "1.0"), ("web", "1.0")], cat)
    detail = caught.value.detail
    assert "docker 23.0 in the template does not satisfy every range on it" in detail
    assert "app 1.0 requires docker >=24 (not satisfied)" in detail
    assert "web 1.0 extends docker (any version)" in detail
    assert "available: 23.0, 24.0" in detail


def test_unsatisfiable_ranges_name_each_source_and_the_versions() -> None:
    """No version inside every range: the error lists ranges, sources, and versions."""
    cat = catalog(
        lib={"1.0": spec(), "1.4": spec(), "2.0": spec()},
        app={"1.0": spec(dependencies={"lib": ">=2"})},
        web={"1.0": spec(dependencies={"lib": "<1.5"})},
    )
    with pytest.raises(Invalid) as caught:
        resolve([("app", "1.0"), ("web", "1.0")], cat)
    detail = caught.value.detail
    assert "no version of 'lib' satisfies every range on it" in detail
    assert "app 1.0 requires lib >=2; web 1.0 requires lib <1.5" in detail
    assert "available: 1.0, 1.4, 2.0" in detail
    assert caught.value.extra["module"] == "lib"


def test_missing_template_module_is_named() -> None:
    """A template entry for an unknown module is an error naming the entry."""
    with pytest.raises(Invalid, match=r"template entry 2 \(ghost 1.0\): module 'ghost' is not"):
        resolve([("base", "1.0"), ("ghost", "1.0")], catalog(base={"1.0": spec()}))


def test_missing_template_version_lists_available_versions() -> None:
    """A template entry for an unknown version lists the versions there are."""
    cat = catalog(base={"1.0": spec(), "1.2": spec()})
    with pytest.raises(Invalid, match=r"has no version 1.1; available: 1.0, 1.2"):
        resolve([("base", "1.1")], cat)


def test_invalid_template_version_is_named() -> None:
    """A template version that is not PEP 440 is reported with its entry."""
    with pytest.raises(Invalid, match=r"template entry 1 \(base latest\): 'latest' is not"):
        resolve([("base", "latest")], catalog(base={"1.0": spec()}))


def test_template_version_matches_equal_catalog_version() -> None:
    """`1.0.0` in the template finds `1.0` in the catalog; the catalog's text is reported."""
    result = resolve([("base", "1.0.0")], catalog(base={"1.0": spec()}))
    assert result[0].version == "1.0"


def test_missing_dependency_names_its_dependent() -> None:
    """A dependency that is not in the catalog names who needs it."""
    cat = catalog(app={"1.0": spec(extends="docker")})
    with pytest.raises(Invalid, match=r"'docker' is not in the catalog, but app 1.0 extends it"):
        resolve([("app", "1.0")], cat)


def test_cycle_through_dependencies_and_extends_is_named_in_order() -> None:
    """A cycle is reported as a -> b -> c -> a."""
    cat = catalog(
        a={"1.0": spec(dependencies={"b": ""})},
        b={"1.0": spec(extends="c")},
        c={"1.0": spec(dependencies={"a": ">=1"})},
    )
    with pytest.raises(Invalid, match=r"dependency cycle: a -> b -> c -> a") as caught:
        resolve([("a", "1.0")], cat)
    assert caught.value.extra["cycle"] == ["a", "b", "c", "a"]


def test_module_extending_itself_is_a_cycle() -> None:
    """`extends` naming the module itself is the shortest cycle."""
    cat = catalog(a={"1.0": spec(extends="a")})
    with pytest.raises(Invalid, match=r"dependency cycle: a -> a"):
        resolve([("a", "1.0")], cat)


def test_duplicate_module_names_both_entries() -> None:
    """Two versions of one module in the template is an error naming both."""
    cat = catalog(base={"1.0": spec(), "2.0": spec()}, web={"1.0": spec()})
    with pytest.raises(Invalid) as caught:
        resolve([("base", "1.0"), ("web", "1.0"), ("base", "2.0")], cat)
    assert caught.value.detail == (
        "module 'base' is listed twice: template entry 1 (base 1.0) and template entry 3 "
        "(base 2.0); a module may appear only once"
    )


def test_mutually_narrowing_versions_are_reported_not_looped() -> None:
    """Two added modules whose newest versions exclude each other end in an error."""
    cat = catalog(
        a={"1.0": spec(), "2.0": spec(dependencies={"b": "<2"})},
        b={"1.0": spec(), "2.0": spec(dependencies={"a": "<2"})},
        top={"1.0": spec(dependencies={"a": "", "b": ""})},
    )
    # Walking a first picks a 2.0, which limits b to 1.0: a consistent answer in one round.
    assert layers(resolve([("top", "1.0")], cat)) == ["b@1.0*", "a@2.0*", "top@1.0"]


def test_versions_that_never_settle_are_reported() -> None:
    """A pick that keeps ruling itself out ends in an error asking for a pin, not a loop."""
    cat = catalog(
        a={"1.0": spec(dependencies={"c": ""})},
        c={"2.0": spec(dependencies={"d": ""}), "3.0": spec(dependencies={"d": "<2"})},
        d={"1.0": spec(dependencies={"c": "<3"}), "2.0": spec()},
    )
    with pytest.raises(Invalid, match=r"the versions of c keep changing.*pin c in the template"):
        resolve([("a", "1.0")], cat)
    result = resolve([("a", "1.0"), ("c", "2.0")], cat)
    assert layers(result) == ["d@2.0*", "c@2.0", "a@1.0"]


def test_catalog_may_name_versions_as_version_objects() -> None:
    """A catalog giving `Version` objects works; versions are reported normalized."""

    class VersionCatalog:
        def versions(self, name: str) -> list[Version]:
            return [Version("1.0"), Version("2.0-rc1")] if name == "base" else []

        def spec(self, name: str, version: Version) -> ModuleSpec:
            assert isinstance(version, Version)
            return spec(description=str(version))

    result = resolve([("base", "2.0rc1")], VersionCatalog())
    assert (result[0].version, result[0].spec.description) == ("2.0rc1", "2.0rc1")


def test_memory_catalog_rejects_equal_versions() -> None:
    """`1.0` and `1.0.0` are one version; a catalog cannot hold both."""
    with pytest.raises(Invalid, match="which are the same version"):
        MemoryCatalog({"base": {"1.0": spec(), "1.0.0": spec()}})


def test_db_catalog_rejects_equal_versions_like_the_memory_catalog() -> None:
    """The database's unique version key keeps `1.1` and `1.1.0` apart from the start; were
    such rows there anyway, resolving must refuse them rather than mix their specs up."""
    from powernode.modules.service import CatalogVersion, DbCatalog

    rows = [CatalogVersion("base", text, spec(), "0" * 64) for text in ("1.1", "2.0", "1.1.0")]
    with pytest.raises(Invalid, match=r"module 'base' has versions '1\.1' and '1\.1\.0'"):
        DbCatalog(rows)
    assert DbCatalog(rows[:2]).versions("base") == ["1.1", "2.0"]
