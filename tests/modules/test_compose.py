"""Stacking layers: masks, `extends` overrides, conflicts, footprint."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from powernode.modules.compose import compose
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
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
    assert result.footprint()["overrides"] == [
        {"module": "docker-tuned@1.0", "overridden": 1, "paths": ["etc/docker/daemon.json"]}
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
    masks = result.footprint()["masks"]
    assert masks == [
        {
            "module": "slim@1.0",
            "removed": 3,
            "paths": ["etc/motd", "usr/share/doc", "usr/share/doc/a"],
        }
    ]


def test_footprint_counts_files_bytes_and_contributions() -> None:
    base = [d("etc"), f("etc/a", "12345")]
    app = [
        f("etc/b", "123"),
        Entry(path="l", type=SYMLINK, mode=0o777, uid=0, gid=0, target="etc/a"),
    ]
    foot = compose([(Layer("base"), base), (Layer("app"), app)]).footprint()
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
