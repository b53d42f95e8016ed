"""rsync filter rules: examples for each documented behaviour, and a differential test that
compares `select_paths` with the real `rsync -a --dry-run` on generated trees and rule sets."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powernode.errors import Invalid
from powernode.modules.filters import FilterRules, select_output, select_paths

RSYNC = shutil.which("rsync")

# A tree is a dict: name -> None (file), "->" + target (symlink) or a dict (directory).
Tree = dict[str, Any]


def make_tree(root: Path, tree: Tree) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, node in tree.items():
        if isinstance(node, dict):
            make_tree(root / name, node)
        elif isinstance(node, str):
            (root / name).symlink_to(node.removeprefix("->"))
        else:
            (root / name).touch()


def select(tmp_path: Path, tree: Tree, rules: str) -> list[str]:
    make_tree(tmp_path / "tree", tree)
    return select_paths(tmp_path / "tree", FilterRules.parse(rules))


def rsync_select(tree: Path, rules: str, scratch: Path) -> list[str]:
    """What the real rsync selects from `tree` with `rules` as a merge file."""
    assert RSYNC is not None
    rules_file, empty = scratch / "rules", scratch / "empty"
    rules_file.write_text(rules)
    empty.mkdir(exist_ok=True)
    out = subprocess.run(
        [
            RSYNC,
            "-a",
            "--dry-run",
            "--out-format=%n",
            f"--filter=merge {rules_file}",
            f"{tree}/",
            f"{empty}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},  # print names as they are, not \\#ooo escapes
    ).stdout
    return sorted(line for line in out.splitlines() if line != "./")


SAMPLE: Tree = {
    "a.conf": None,
    "b.txt": None,
    ".hidden": None,
    "etc": {"nginx": {"nginx.conf": None, "mime.types": None}, "hosts": None},
    "sub": {"a.conf": None, "sub": {"b.txt": None, "x.conf": None}},
    "empty": {},
    "link": "->etc",
}


ETC = "etc/ etc/hosts etc/nginx/ etc/nginx/nginx.conf etc/nginx/mime.types"


@pytest.mark.parametrize(
    ("rules", "gone"),
    [
        pytest.param("- *.txt", "b.txt sub/sub/b.txt", id="unanchored-matches-last-component"),
        pytest.param("- /a.conf", "a.conf", id="leading-slash-anchors-at-root"),
        pytest.param(
            "- sub/",
            "sub/ sub/a.conf sub/sub/ sub/sub/b.txt sub/sub/x.conf",
            id="trailing-slash-matches-dirs",
        ),
        pytest.param("- link/", "", id="symlink-to-dir-is-not-a-dir"),
        pytest.param(
            "- nginx/*",
            "etc/nginx/nginx.conf etc/nginx/mime.types",
            id="slash-pattern-matches-trailing-components",
        ),
        pytest.param("- /nginx/*", "", id="anchored-slash-pattern"),
        pytest.param("- /etc/*", ETC.removeprefix("etc/ "), id="star-stops-at-slash"),
        pytest.param("- /etc/*s", "etc/hosts", id="star-does-not-cross-slash"),
        pytest.param("- /etc/**s", "etc/hosts etc/nginx/mime.types", id="double-star-crosses"),
        pytest.param("- nginx/**/nginx.conf", "", id="double-star-needs-a-dir-between"),
        pytest.param("- **/a.conf", "a.conf sub/a.conf", id="leading-double-star-matches-top"),
        pytest.param(
            "- sub/**",
            "sub/a.conf sub/sub/ sub/sub/b.txt sub/sub/x.conf",
            id="unanchored-double-star-matches-after-any-slash",
        ),
        pytest.param("- /etc/***", ETC, id="triple-star-matches-the-dir-and-contents"),
        pytest.param("- ?.conf", "a.conf sub/a.conf sub/sub/x.conf", id="question-mark"),
        pytest.param("- [ab].*", "a.conf b.txt sub/a.conf sub/sub/b.txt", id="class"),
        pytest.param("- [!a].*", "b.txt sub/sub/b.txt sub/sub/x.conf", id="negated-class-bang"),
        pytest.param("- [^a].*", "b.txt sub/sub/b.txt sub/sub/x.conf", id="negated-class-caret"),
        pytest.param("- [[:alpha:]].conf", "a.conf sub/a.conf sub/sub/x.conf", id="posix-class"),
        pytest.param("+ a.conf\n- *.conf", "sub/sub/x.conf etc/nginx/nginx.conf", id="first-wins"),
        pytest.param("- a.conf\n!\n- b.txt", "b.txt sub/sub/b.txt", id="bang-clears"),
        pytest.param(
            "exclude *.conf\ninclude *",
            "a.conf sub/a.conf sub/sub/x.conf etc/nginx/nginx.conf",
            id="spelled-out",
        ),
        pytest.param("# - *\n; - *\n\n  \n- .hidden", ".hidden", id="comments-and-blank-lines"),
    ],
)
def test_documented_semantics(tmp_path: Path, rules: str, gone: str) -> None:
    """Each rule list removes exactly the listed paths from the sample tree's selection."""
    everything = set(select(tmp_path / "all", SAMPLE, ""))
    assert everything - set(select(tmp_path / "some", SAMPLE, rules)) == set(gone.split())


def test_backslash_is_literal_without_wildcards_and_escapes_with_them() -> None:
    """As in rsync, `\\` escapes only in patterns that contain `*`, `?` or `[`."""
    assert not FilterRules.parse("- a\\b").decide("a\\b", is_dir=False)
    assert FilterRules.parse("- a\\b").decide("ab", is_dir=False)
    assert not FilterRules.parse("- \\[a]*").decide("[a]x", is_dir=False)


def test_include_dirs_then_files_then_exclude_rest_selects_every_conf(tmp_path: Path) -> None:
    """`+ */`, `+ *.conf`, `- *` selects the .conf files of every directory, and the dirs."""
    assert select(tmp_path, SAMPLE, "+ */\n+ *.conf\n- *") == [
        "a.conf", "empty/", "etc/", "etc/nginx/", "etc/nginx/nginx.conf", "sub/", "sub/a.conf",
        "sub/sub/", "sub/sub/x.conf",
    ]  # fmt: skip


def test_excluded_directory_is_not_descended(tmp_path: Path) -> None:
    """A later include cannot rescue a file inside an excluded directory."""
    rules = "- etc/\n+ etc/hosts\n+ *"
    assert not [p for p in select(tmp_path, SAMPLE, rules) if p.startswith("etc")]
    parsed = FilterRules.parse(rules)
    assert parsed.decide("etc/hosts", is_dir=False)
    assert not parsed.selects("etc/hosts", is_dir=False)
    assert parsed.selects("sub/a.conf", is_dir=False)


def test_unmatched_paths_are_included() -> None:
    """A path no rule matches is included."""
    assert FilterRules.parse("- *.txt").decide("etc/hosts", is_dir=False)
    assert FilterRules.parse("").selects("a/b/c", is_dir=True)


def test_triple_star_matches_the_directory_but_not_a_file_of_that_name() -> None:
    """`dir/***` matches the directory `dir` and its contents, not a file named `dir`."""
    rules = FilterRules.parse("- /etc/***")
    assert not rules.decide("etc", is_dir=True)
    assert not rules.decide("etc/x/y", is_dir=False)
    assert rules.decide("etc", is_dir=False)


def test_pattern_keeps_trailing_spaces_like_rsync() -> None:
    """Everything after the single space is the pattern, so `- x ` does not match `x`."""
    rules = FilterRules.parse("- x \n-  y")
    assert rules.decide("x", is_dir=False)
    assert not rules.decide("x ", is_dir=False)
    assert not rules.decide(" y", is_dir=False)


def test_select_output_prints_one_path_per_line(tmp_path: Path) -> None:
    """The CLI output is the sorted paths, one a line, with a final newline when non-empty."""
    make_tree(tmp_path / "t", SAMPLE)
    assert select_output(tmp_path / "t", "+ /etc/\n+ /etc/hosts\n- *") == "etc/\netc/hosts\n"
    assert select_output(tmp_path / "t", "- *") == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+ a\nx foo", "rules line 2: 'x foo': unknown rule 'x'; use +, -, include, exclude or !"),
        ("# c\n\n-! foo", "rules line 3: '-! foo': rule modifiers are not supported"),
        ("-/ foo", "rules line 1: '-/ foo': rule modifiers are not supported"),
        ("+_foo", "rules line 1: '+_foo': rule modifiers are not supported"),
        ("merge other", "rules line 1: 'merge other': rsync rule 'merge' is not supported"),
        (". other", "rules line 1: '. other': rsync rule '.' is not supported"),
        (": .rules", "rules line 1: ': .rules': rsync rule ':' is not supported"),
        ("P foo", "rules line 1: 'P foo': rsync rule 'P' is not supported"),
        ("- a\r\nR foo", "rules line 2: 'R foo': rsync rule 'R' is not supported"),
        ("H foo\n", "rules line 1: 'H foo': rsync rule 'H' is not supported"),
        ("S foo", "rules line 1: 'S foo': rsync rule 'S' is not supported"),
        ("- ", "rules line 1: '- ': missing pattern after '-'"),
        ("include", "rules line 1: 'include': missing pattern after 'include'"),
        ("! x", "rules line 1: '! x': '!' takes no pattern"),
        (" - foo", "rules line 1: ' - foo': a rule cannot start with whitespace"),
        ("- [ab", "rules line 1: '- [ab': unterminated character class"),
        ("- [[:nope:]]", "rules line 1: '- [[:nope:]]': unknown character class '[:nope:]'"),
        ("- *\\", "rules line 1: '- *\\\\': pattern ends with a lone '\\'"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    """Unsupported or malformed rules are `Invalid`, naming the line number, line and problem."""
    with pytest.raises(Invalid) as caught:
        FilterRules.parse(text)
    assert caught.value.detail.startswith(message)


def test_parse_error_names_the_source() -> None:
    """`source` replaces 'rules' in the message."""
    with pytest.raises(Invalid, match=r"^web\.rules line 1: "):
        FilterRules.parse("x", source="web.rules")


def test_paths_must_be_relative() -> None:
    """`decide` refuses absolute paths and trailing slashes."""
    with pytest.raises(Invalid):
        FilterRules.parse("").decide("/etc", is_dir=True)
    with pytest.raises(Invalid):
        FilterRules.parse("").decide("etc/", is_dir=True)


# --- differential test against the real rsync -------------------------------------------------

NAMES = ["a", "b", "ab", "a.conf", "b.txt", ".hidden", "sub", "x.conf", "[a]", "a b", "é"]
SEGMENTS = ["a", "b", "sub", "*", "?", "a*", "*.conf", "*.txt", "[ab]", "[!a]*", "[^b]?*",
            "**", "a**", ".*", "?.conf", "[[:alpha:]]*", "[a-b]", "\\[a]", "é"]  # fmt: skip

trees: st.SearchStrategy[Tree] = st.recursive(
    st.dictionaries(st.sampled_from(NAMES), st.none(), max_size=4),
    lambda children: st.dictionaries(
        st.sampled_from(NAMES),
        st.none() | children | st.sampled_from(["->sub", "->.", "->missing"]),
        max_size=4,
    ),
    max_leaves=20,
)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    body = "/".join(draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3)))
    lead = draw(st.sampled_from(["", "", "/"]))
    tail = draw(st.sampled_from(["", "", "/", "/***"]))
    return lead + body + tail


rule_lines = st.one_of(
    st.builds(lambda verb, pattern: f"{verb} {pattern}",
              st.sampled_from(["+", "-", "include", "exclude"]), patterns()),
    st.sampled_from(["+ */", "- *", "!", "# comment", "", "- **", "+ *.conf"]),
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, lines=st.lists(rule_lines, max_size=8))
def test_select_paths_matches_rsync(tree: Tree, lines: list[str]) -> None:
    """On generated trees and rule lists, select_paths selects exactly what rsync transfers."""
    rules = "\n".join(lines) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        make_tree(root, tree)
        parsed = FilterRules.parse(rules)
        selected = select_paths(root, parsed)
        assert selected == rsync_select(root, rules, Path(tmp))
        for path in root.rglob("*"):
            is_dir = path.is_dir() and not path.is_symlink()
            relative = path.relative_to(root).as_posix()
            listed = relative + "/" if is_dir else relative
            assert parsed.selects(relative, is_dir) == (listed in selected)
