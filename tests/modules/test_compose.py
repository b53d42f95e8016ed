"""Stacking layers: masks, `extends` overrides, conflicts, footprint."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.modules.compose import Composition, compose
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.footprint import PATH_LIMIT
from powernode.modules.spec import ModuleSpec


@dataclass
class Layer:
    name: str
    version: str = "1.0"
    spec: ModuleSpec = field(default_factory=ModuleSpec)


def d(path: str, mode: int = 0o755) -> Entry:
    return Entry(path=path, type=DIR, mode=mode, uid=0, gid=0)


def f(path: str, content: str = "x", mode: int = 0o644, uid: int = 0) -> Entry:
    sha = (content * 64)[:64]
    return Entry(path=path, type=FILE, mode=mode, uid=uid, gid=0, size=len(content), sha256=sha)


def ln(path: str, target: str) -> Entry:
    return Entry(path=path, type=SYMLINK, mode=0o777, uid=0, gid=0, size=len(target), target=target)


def parents_are_directories(tree: dict[str, tuple[Entry, str]]) -> bool:
    return all(tree.get(path.rpartition("/")[0], (d("x"), ""))[0].type == DIR for path in tree)


def pairs(result: Composition) -> set[tuple[str, str, str]]:
    return {(c.path, c.lower, c.upper) for c in result.conflicts}


def test_layers_stack_and_identical_paths_do_not_conflict() -> None:
    base = [d("etc"), f("etc/hosts", "a"), d("usr"), f("usr/readme", "r")]
    app = [d("etc"), f("etc/app.conf", "b"), f("usr/readme", "r")]
    result = compose([(Layer("base"), base), (Layer("app"), app)])
    assert sorted(result.entries) == ["etc", "etc/app.conf", "etc/hosts", "usr", "usr/readme"]
    assert result.conflicts == []
    assert result.entries["etc/app.conf"][1] == "app@1.0"
    assert result.entries["usr/readme"][1] == "base@1.0"


def test_different_content_mode_owner_or_type_conflicts_with_both_sources() -> None:
    base = [d("etc"), f("etc/a", "1"), f("etc/b", mode=0o644), f("etc/c"), f("etc/d")]
    other = [
        d("etc"),
        f("etc/a", "2"),
        f("etc/b", mode=0o600),
        f("etc/c", uid=1000),
        Entry(path="etc/d", type=SYMLINK, mode=0o777, uid=0, gid=0, target="a"),
    ]
    result = compose([(Layer("base"), base), (Layer("other"), other)])
    found = {(c.path, c.lower, c.upper, c.difference) for c in result.conflicts}
    assert found == {
        ("etc/a", "base@1.0", "other@1.0", "content"),
        ("etc/b", "base@1.0", "other@1.0", "mode 644 vs 600"),
        ("etc/c", "base@1.0", "other@1.0", "owner 0:0 vs 1000:0"),
        ("etc/d", "base@1.0", "other@1.0", "type file vs symlink"),
    }
    assert result.entries["etc/a"][0].sha256 == f("etc/a", "1").sha256  # the lower one stays


def test_a_module_that_extends_another_overrides_its_files() -> None:
    docker = [d("etc"), d("etc/docker"), f("etc/docker/daemon.json", "default")]
    tuned = [d("etc"), d("etc/docker"), f("etc/docker/daemon.json", "custom")]
    child = Layer("docker-tuned", spec=ModuleSpec(extends="docker"))
    result = compose([(Layer("docker"), docker), (child, tuned)])
    assert result.conflicts == []
    entry, source = result.entries["etc/docker/daemon.json"]
    assert (entry.sha256, source) == (f("x", "custom").sha256, "docker-tuned@1.0")
    assert result.footprint().model_dump()["overrides"] == [
        {
            "module": "docker-tuned@1.0",
            "overridden": 1,
            "paths": ["etc/docker/daemon.json"],
            "paths_truncated": False,
            "sources": [{"path": "etc/docker/daemon.json", "modules": ["docker@1.0"]}],
            "by_module": [{"module": "docker@1.0", "paths": 1}],
        }
    ]


def test_extends_reaches_grandparents() -> None:
    a = [f("x", "1")]
    c = [f("x", "3")]
    layers = [
        (Layer("a"), a),
        (Layer("b", spec=ModuleSpec(extends="a")), []),
        (Layer("c", spec=ModuleSpec(extends="b")), c),
    ]
    assert compose(layers).conflicts == []


def test_a_mask_hides_paths_from_lower_modules_and_is_reported() -> None:
    base = [d("usr"), d("usr/share"), d("usr/share/doc"), f("usr/share/doc/a"), f("usr/bin")]
    base += [d("etc"), f("etc/motd", "hello")]
    slim = Layer("slim", spec=ModuleSpec(mask=["/usr/share/doc/", "motd"]))
    result = compose([(Layer("base"), base), (slim, [d("etc"), f("etc/motd", "bye")])])
    assert "usr/share/doc" not in result.entries
    assert "usr/share/doc/a" not in result.entries
    assert result.entries["etc/motd"][1] == "slim@1.0"  # masked below, then provided: no conflict
    assert result.conflicts == []
    masks = result.footprint().model_dump()["masks"]
    assert masks == [
        {
            "module": "slim@1.0",
            "removed": 3,
            "paths": ["etc/motd", "usr/share/doc", "usr/share/doc/a"],
            "paths_truncated": False,
            "sources": [
                {"path": "etc/motd", "modules": ["base@1.0"]},
                {"path": "usr/share/doc", "modules": ["base@1.0"]},
                {"path": "usr/share/doc/a", "modules": ["base@1.0"]},
            ],
            "by_module": [{"module": "base@1.0", "paths": 3}],
        }
    ]


def test_footprint_counts_files_bytes_and_contributions() -> None:
    base = [d("etc"), f("etc/a", "12345")]
    app = [
        f("etc/b", "123"),
        Entry(path="l", type=SYMLINK, mode=0o777, uid=0, gid=0, target="etc/a"),
    ]
    foot = compose([(Layer("base"), base), (Layer("app"), app)]).footprint().model_dump()
    assert (foot["files"], foot["directories"], foot["symlinks"], foot["bytes"]) == (2, 1, 1, 8)
    assert foot["modules"] == [
        {"module": "base@1.0", "files": 1, "bytes": 5},
        {"module": "app@1.0", "files": 1, "bytes": 3},
    ]


def test_an_anchored_mask_removes_deep_descendants_too() -> None:
    base = [
        d("usr"),
        d("usr/share"),
        d("usr/share/doc"),
        d("usr/share/doc/pkg"),
        d("usr/share/doc/pkg/examples"),
        f("usr/share/doc/pkg/examples/a.conf"),
        f("usr/share/docs-not-this"),
        d("usr/share/doc0"),
        f("usr/share/doc0/x"),
    ]
    slim = Layer("slim", spec=ModuleSpec(mask=["/usr/share/doc/"]))
    result = compose([(Layer("base"), base), (slim, [])])
    assert sorted(result.entries) == [
        "usr",
        "usr/share",
        "usr/share/doc0",
        "usr/share/doc0/x",
        "usr/share/docs-not-this",
    ]


@given(
    tree=st.lists(
        st.lists(st.sampled_from(["a", "b", "doc", "x.conf"]), min_size=1, max_size=5),
        min_size=1,
        max_size=30,
    ),
    masks=st.lists(
        st.builds(
            lambda anchor, parts, slash: anchor + "/".join(parts) + slash,
            st.sampled_from(["/", ""]),
            st.lists(st.sampled_from(["a", "b", "doc", "*", "x.conf"]), min_size=1, max_size=3),
            st.sampled_from(["", "/"]),
        ),
        min_size=1,
        max_size=3,
    ),
)
@settings(max_examples=200, deadline=None)
def test_masks_drop_exactly_what_the_rules_do_not_select(
    tree: list[list[str]], masks: list[str]
) -> None:
    """Whatever shortcut masking takes, it agrees with FilterRules.selects path by path."""
    from powernode.modules.filters import FilterRules

    entries: dict[str, Entry] = {}
    for parts in tree:  # every proper prefix is a directory...
        for depth in range(1, len(parts)):
            path = "/".join(parts[:depth])
            entries.setdefault(path, d(path))
    for parts in tree:  # ...and the rest are files
        path = "/".join(parts)
        entries.setdefault(path, f(path))
    result = compose(
        [(Layer("base"), list(entries.values())), (Layer("m", spec=ModuleSpec(mask=masks)), [])]
    )
    rules = FilterRules.parse("\n".join(f"- {m}" for m in masks))
    expected = {p for p, e in entries.items() if rules.selects(p, e.type == DIR)}
    assert set(result.entries) == expected


@pytest.mark.parametrize(
    "replacement", [f("etc/conf.d", "flat"), ln("etc/conf.d", "/run/conf")], ids=["file", "symlink"]
)
def test_an_override_of_a_directory_by_a_non_directory_takes_the_subtree_along(
    replacement: Entry,
) -> None:
    base = [d("etc"), d("etc/conf.d"), d("etc/conf.d/sub"), f("etc/conf.d/sub/a"), f("etc/conf.e")]
    child = Layer("child", spec=ModuleSpec(extends="base"))
    result = compose([(Layer("base"), base), (child, [d("etc"), replacement])])
    assert result.conflicts == []
    assert sorted(result.entries) == ["etc", "etc/conf.d", "etc/conf.e"]
    assert result.entries["etc/conf.d"] == (replacement, "child@1.0")
    assert parents_are_directories(result.entries)
    (override,) = result.footprint().overrides
    assert (override.module, override.overridden) == ("child@1.0", 3)
    assert override.paths == ["etc/conf.d", "etc/conf.d/sub", "etc/conf.d/sub/a"]
    assert [(s.path, s.modules) for s in override.sources][-1] == ("etc/conf.d/sub/a", ["base@1.0"])


def test_every_differing_pair_of_providers_conflicts() -> None:
    layers = [
        (Layer(name), [f("x", content)]) for name, content in [("a", "1"), ("b", "2"), ("c", "3")]
    ]
    assert pairs(compose(layers)) == {
        ("x", "a@1.0", "b@1.0"),
        ("x", "a@1.0", "c@1.0"),
        ("x", "b@1.0", "c@1.0"),
    }
    agreeing = [
        (Layer(name), [f("x", content)]) for name, content in [("a", "1"), ("b", "1"), ("c", "3")]
    ]
    result = compose(agreeing)
    assert pairs(result) == {("x", "a@1.0", "c@1.0"), ("x", "b@1.0", "c@1.0")}
    assert result.entries["x"][1] == "a@1.0"  # a conflict leaves the lowest entry in place


def test_an_override_of_a_conflicting_module_is_still_judged_against_the_others() -> None:
    a, b = (Layer("a"), [f("x", "1")]), (Layer("b"), [f("x", "2")])
    child = Layer("c", spec=ModuleSpec(extends="b"))
    differs = compose([a, b, (child, [f("x", "3")])])
    assert pairs(differs) == {("x", "a@1.0", "b@1.0"), ("x", "a@1.0", "c@1.0")}
    assert differs.overridden == {"c@1.0": [("x", ("b@1.0",))]}
    # c agreeing with a settles nothing between a and b: that pair is still reported.
    agrees = compose([a, b, (child, [f("x", "1")])])
    assert pairs(agrees) == {("x", "a@1.0", "b@1.0")}
    assert agrees.overridden == {"c@1.0": [("x", ("b@1.0",))]}


def test_modules_above_an_override_are_judged_against_the_overriding_entry() -> None:
    docker = (Layer("docker"), [f("daemon.json", "default")])
    tuned = (Layer("tuned", spec=ModuleSpec(extends="docker")), [f("daemon.json", "custom")])
    same = compose([docker, tuned, (Layer("agent"), [f("daemon.json", "custom")])])
    assert same.conflicts == []
    other = compose([docker, tuned, (Layer("agent"), [f("daemon.json", "other")])])
    assert pairs(other) == {("daemon.json", "tuned@1.0", "agent@1.0")}


def test_a_mask_reports_every_module_it_hid_a_path_from() -> None:
    base = [d("doc"), *(f(f"doc/{i:03d}") for i in range(PATH_LIMIT + 10))]
    extra = [d("doc"), f("doc/zz-extra")]
    slim = Layer("slim", spec=ModuleSpec(mask=["/doc/"]))
    foot = compose([(Layer("base"), base), (Layer("extra"), extra), (slim, [])]).footprint()
    (mask,) = foot.masks
    assert mask.removed == PATH_LIMIT + 12  # exact, though the list is cut
    assert mask.paths_truncated
    assert len(mask.paths) == len(mask.sources) == PATH_LIMIT
    assert mask.sources[0].path == "doc"
    assert mask.sources[0].modules == ["base@1.0", "extra@1.0"]
    assert [(m.module, m.paths) for m in mask.by_module] == [
        ("base@1.0", PATH_LIMIT + 11),
        ("extra@1.0", 2),
    ]


NAMES = ["a", "b", "c"]


@st.composite
def module_tree(draw: st.DrawFn) -> list[Entry]:
    """A consistent tree: every parent a directory; types and contents vary."""
    entries: dict[str, Entry] = {}
    for parts in draw(st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3))):
        path = "/".join(parts)
        if any(entries.get(p, d(p)).type != DIR for p in _prefixes(parts)):
            continue
        for prefix in _prefixes(parts):
            entries.setdefault(prefix, d(prefix))
        if path in entries:
            continue
        kind = draw(st.sampled_from(["dir", "file", "link"]))
        content = draw(st.sampled_from(["1", "2"]))
        entries[path] = {"dir": d(path), "file": f(path, content), "link": ln(path, content)}[kind]
    return sorted(entries.values(), key=lambda e: e.path)


def _prefixes(parts: list[str]) -> list[str]:
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@given(trees=st.lists(module_tree(), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_a_chain_of_overrides_never_leaves_a_path_under_a_non_directory(
    trees: list[list[Entry]],
) -> None:
    layers = [
        (Layer(f"m{i}", spec=ModuleSpec(extends=f"m{i - 1}" if i else None)), tree)
        for i, tree in enumerate(trees)
    ]
    result = compose(layers)
    assert result.conflicts == []
    assert parents_are_directories(result.entries)
    top = {e.path: e for e in trees[-1]}
    assert all(result.entries[p][0] == e for p, e in top.items())


@given(trees=st.lists(module_tree(), min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_unrelated_modules_conflict_exactly_on_each_differing_pair(
    trees: list[list[Entry]],
) -> None:
    """Without masks or `extends`, the conflicts are every pair of providers that differ."""
    result = compose([(Layer(f"m{i}"), tree) for i, tree in enumerate(trees)])
    expected = set()
    for i, lower in enumerate(trees):
        below = {e.path: e for e in lower}
        for j in range(i + 1, len(trees)):
            for entry in trees[j]:
                other = below.get(entry.path)
                if other is not None and not other.same_as(entry):
                    expected.add((entry.path, f"m{i}@1.0", f"m{j}@1.0"))
    assert pairs(result) == expected
    assert len(result.conflicts) == len(expected)
