"""rsync filter rules: examples for each documented behaviour, regression cases checked
against the real rsync, and differential tests that compare `select_output` with the real
`rsync -a --dry-run --out-format=%n` on generated trees, rule sets and file names."""

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
from powernode.modules.rsync_names import rsync_name, valid_length

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


def rsync_output(
    tree: Path, rules: str | bytes, scratch: Path, locale: str = "C.UTF-8"
) -> list[bytes] | None:
    """The lines the real rsync prints for `tree` with `rules` as a merge file (sorted, without
    `./`); None if it refuses the rules."""
    assert RSYNC is not None
    rules_file, empty = scratch / "rules", scratch / "empty"
    rules_file.write_bytes(rules if isinstance(rules, bytes) else os.fsencode(rules))
    empty.mkdir(exist_ok=True)
    proc = subprocess.run(
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
        check=False,
        env={**os.environ, "LC_ALL": locale},
    )
    if proc.returncode == 1 and b"error" in proc.stderr:  # RERR_SYNTAX: a rule it refuses
        return None
    assert proc.returncode == 0, proc.stderr
    return sorted(line for line in proc.stdout.split(b"\n")[:-1] if line != b"./")


def output_lines(root: Path, rules: str | bytes, charset: str = "UTF-8") -> list[bytes]:
    """`select_output` as a list of lines."""
    return select_output(root, rules, charset).split(b"\n")[:-1]


needs_rsync = pytest.mark.skipif(RSYNC is None, reason="rsync is not installed")


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
        pytest.param("# - *\n; - *\n\n\r\n- .hidden", ".hidden", id="comments-and-blank-lines"),
        pytest.param("- a.conf\nclear\n- b.txt", "b.txt sub/sub/b.txt", id="clear-clears"),
        pytest.param(
            "-! *.conf",
            f"b.txt .hidden empty/ link {ETC} sub/ sub/a.conf sub/sub/ sub/sub/b.txt "
            "sub/sub/x.conf",
            id="negated-rule-matches-what-the-pattern-does-not",
        ),
        pytest.param(
            "-! */",
            "a.conf b.txt .hidden link etc/hosts etc/nginx/nginx.conf etc/nginx/mime.types "
            "sub/a.conf sub/sub/b.txt sub/sub/x.conf",
            id="negated-dir-only-rule-matches-every-non-directory",
        ),
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
    assert select_output(tmp_path / "t", "+ /etc/\n+ /etc/hosts\n- *") == b"etc/\netc/hosts\n"
    assert select_output(tmp_path / "t", "- *") == b""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+ a\nx foo", "rules line 2: 'x foo': unknown rule 'x'; use +, -, include, exclude, !"),
        ("includefoo", "rules line 1: 'includefoo': unknown rule 'includefoo'"),
        ("c", "rules line 1: 'c': unknown rule 'c'"),
        ("+foo", "rules line 1: '+foo': invalid rule modifier 'f' (rsync refuses it too)"),
        ("-,ab", "rules line 1: '-,ab': invalid rule modifier 'a'"),
        ("Hs foo", "rules line 1: 'Hs foo': invalid rule modifier 's'"),
        ("include\tfoo", "rules line 1: 'include\\tfoo': invalid rule modifier '\\t'"),
        ("-/ foo", "rules line 1: '-/ foo': the '/' modifier (match the absolute path) is not"),
        ("-C foo", "rules line 1: '-C foo': the 'C' modifier (CVS excludes) is not supported"),
        ("merge other", "rules line 1: 'merge other': merge rules ('merge', 'dir-merge', '.', "),
        (". other", "rules line 1: '. other': merge rules"),
        (": .rules", "rules line 1: ': .rules': merge rules"),
        ("- a\r\ndir-merge .x", "rules line 2: 'dir-merge .x': merge rules"),
        ("- ", "rules line 1: '- ': missing pattern after '-'"),
        ("include", "rules line 1: 'include': missing pattern after 'include'"),
        ("-!_", "rules line 1: '-!_': missing pattern after '-!'"),
        ("! x", "rules line 1: '! x': '!' and 'clear' take no pattern"),
        ("clear ", "rules line 1: 'clear ': '!' and 'clear' take no pattern"),
        (" - foo", "rules line 1: ' - foo': a rule cannot start with whitespace"),
        ("- a\n  \n", "rules line 2: '  ': a line of only whitespace is not blank for rsync"),
        ("\t", "rules line 1: '\\t': a line of only whitespace is not blank for rsync"),
        ("- " + "x" * 4096, "rules line 1: '- xxx"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    """Rules rsync refuses, and the few it accepts that we do not implement, are `Invalid`,
    naming the line number, line and problem."""
    with pytest.raises(Invalid) as caught:
        FilterRules.parse(text)
    assert caught.value.detail.startswith(message)


@needs_rsync
@pytest.mark.parametrize(
    "text",
    ["x foo", "includefoo", "+foo", "-,ab", "Hs foo", "include\tfoo", "- ", "include", "! x",
     "clear ", " - foo", "- a\n  \n", "\t"],
)  # fmt: skip
def test_rsync_refuses_what_we_call_invalid(tmp_path: Path, text: str) -> None:
    """Where our error says the rule is invalid, rsync refuses the rules file too."""
    (tmp_path / "tree").mkdir()
    assert rsync_output(tmp_path / "tree", text, tmp_path) is None


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


# --- regression cases: each once found to differ from rsync --------------------------------

GAPS: Tree = {"ab": None, "x": None, "d": {"f": None, "e": {"g": None}}, "ld": "->d"}
GAPS_ALL = "ab d/ d/e/ d/e/g d/f ld x"


@pytest.mark.parametrize(
    ("rules", "selected"),
    [
        # rsync strips the dir-only '/' before looking for a trailing '***'
        pytest.param("- d/***/", "ab ld x", id="wild3-with-dir-slash"),
        pytest.param("- /d/***/", "ab ld x", id="anchored-wild3-with-dir-slash"),
        pytest.param("- d***/", "ab ld x", id="wild3-suffix-with-dir-slash"),
        pytest.param("- e/***/", "ab d/ d/f ld x", id="wild3-with-dir-slash-below-top"),
        # a '/' in a class counts as a component, which the class can never match
        pytest.param("- [!/]b", GAPS_ALL, id="slash-in-negated-class-never-matches"),
        pytest.param("- [a/]b", GAPS_ALL, id="slash-in-class-never-matches"),
        pytest.param("- [a/]*", GAPS_ALL, id="slash-in-class-with-star-never-matches"),
        pytest.param("- d/[!/]", GAPS_ALL, id="slash-in-class-after-a-slash-never-matches"),
        pytest.param("- /[!/]b", "d/ d/e/ d/e/g d/f ld x", id="anchored-slash-in-class-matches"),
        pytest.param("- **[!/]b", "d/ d/e/ d/e/g d/f ld x", id="double-star-slash-in-class"),
        # patterns wildmatch aborts on never match; negated, they match everything
        pytest.param("- [ab", GAPS_ALL, id="unterminated-class-never-matches"),
        pytest.param("- [[:nope:]]", GAPS_ALL, id="unknown-posix-class-never-matches"),
        pytest.param("- *\\", GAPS_ALL, id="trailing-backslash-never-matches"),
        pytest.param("-! [ab", "", id="negated-never-matching-matches-all"),
        pytest.param("- x\\", GAPS_ALL, id="trailing-backslash-is-literal-without-wildcards"),
        # accepted syntax
        pytest.param("- ab\nclear\n- x", "ab d/ d/e/ d/e/g d/f ld", id="clear"),
        pytest.param("- ab\nclear,\n- x", "ab d/ d/e/ d/e/g d/f ld", id="clear-comma"),
        pytest.param("- ab\n!,\n- x", "ab d/ d/e/ d/e/g d/f ld", id="bang-comma"),
        pytest.param("-! ab", "ab", id="negate"),
        pytest.param("-!_ab", "ab", id="negate-underscore"),
        pytest.param("-,! ab", "ab", id="comma-negate"),
        pytest.param("exclude,!_ab", "ab", id="word-comma-negate-underscore"),
        pytest.param("-!! ab", "ab", id="negate-twice"),
        pytest.param("-! d/", "d/", id="negated-dir-only"),
        pytest.param("+! */\n- *", "ab ld x", id="include-negated-dir-only"),
        pytest.param("include_ab\n- *", "ab", id="include-underscore"),
        pytest.param("-_ab", "d/ d/e/ d/e/g d/f ld x", id="exclude-underscore"),
        pytest.param("-, ab", "d/ d/e/ d/e/g d/f ld x", id="comma-space"),
        pytest.param("H ab", "d/ d/e/ d/e/g d/f ld x", id="hide-is-exclude"),
        pytest.param("hide_ab", "d/ d/e/ d/e/g d/f ld x", id="hide-word"),
        pytest.param("S ab\n- *", "ab", id="show-is-include"),
        pytest.param("show,! ab\n- *", "d/ d/e/ d/e/g d/f ld x", id="show-negated"),
        pytest.param("P *\nR *\nprotect ab\nrisk x", GAPS_ALL, id="receiver-rules-do-nothing"),
        pytest.param("-p ab", "d/ d/e/ d/e/g d/f ld x", id="perishable"),
        pytest.param("-s ab", "d/ d/e/ d/e/g d/f ld x", id="sender-side"),
        pytest.param("-rs ab", "d/ d/e/ d/e/g d/f ld x", id="both-sides"),
        pytest.param("-r ab\n-r *", GAPS_ALL, id="receiver-side-does-nothing"),
        pytest.param("-x *\n-!x ab", GAPS_ALL, id="xattr-rules-do-nothing"),
        pytest.param("- ab\0x\n\0- x", "d/ d/e/ d/e/g d/f ld x", id="nul-ends-the-line"),
        pytest.param("- x\r\r- ab\r\n", "d/ d/e/ d/e/g d/f ld", id="cr-ends-lines"),
        pytest.param("- " + "x" * 4095, GAPS_ALL, id="longest-pattern"),
    ],
)
def test_agrees_with_rsync(tmp_path: Path, rules: str, selected: str) -> None:
    """Cases that once differed from rsync (or were refused): the selection, and rsync's."""
    make_tree(tmp_path / "tree", GAPS)
    ours = output_lines(tmp_path / "tree", rules)
    assert ours == [p.encode() for p in selected.split()]
    if RSYNC is not None:
        assert rsync_output(tmp_path / "tree", rules, tmp_path) == ours


def test_dir_slash_is_stripped_before_reading_the_triple_star() -> None:
    """`d/***/` is `d/***` for directories only: it matches `d` and the dirs below it."""
    rules = FilterRules.parse("- d/***/")
    assert not rules.decide("d", is_dir=True)
    assert not rules.decide("d/e", is_dir=True)
    assert rules.decide("d/f", is_dir=False)
    assert rules.decide("d", is_dir=False)


def test_never_matching_rules_keep_the_depth_bound() -> None:
    """An anchored rule with a slash in a class can only match at its literal depth; one that
    never matches does not widen the bound masks use."""
    assert FilterRules.parse("- /[!/]b").depth_limit == 1
    assert FilterRules.parse("- /a/b\n- /[ab").depth_limit == 2
    assert FilterRules.parse("-! /a").depth_limit is None


# --- names as rsync prints them -------------------------------------------------------------

ODD_NAMES = [b"a\nb", b"\xff", b"a\\#123", b"a\\#12", b"x\\#1234", b"\\#999", b"\\#1a3", b"\r",
             b"\rz", b"z\r", b"tab\there", b"del\x7f", b"\xc3\xa9", b"\xc2\x85", b"\xe2\x82",
             b"\xe2\x82\xac", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80",
             b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"\\", b"sp ace ",
             b"\x1b[31m", b" "]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "utf8", "ascii"),
    [
        (b"plain.conf", b"plain.conf", b"plain.conf"),
        (b"a\nb", b"a\\#012b", b"a\\#012b"),
        (b"a\\#123", b"a\\#134#123", b"a\\#134#123"),
        (b"a\\#12", b"a\\#12", b"a\\#12"),
        (b"\rz\r", b"\rz\\#015", b"\rz\\#015"),
        (b"tab\tdel\x7f", b"tab\tdel\x7f", b"tab\tdel\x7f"),
        (b"\xc3\xa9", b"\xc3\xa9", b"\\#303\\#251"),
        (b"\xff\xe2\x82", b"\\#377\\#342\\#202", b"\\#377\\#342\\#202"),
        (b"\xed\xa0\x80", b"\\#355\\#240\\#200", b"\\#355\\#240\\#200"),
        (b"\xf8\x88\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\\#370\\#210\\#200\\#200\\#200"),
    ],
)
def test_rsync_name_escapes_like_rsync(name: bytes, utf8: bytes, ascii: bytes) -> None:
    """Control bytes but TAB, bytes the charset refuses and a literal `\\#ddd` are escaped."""
    assert rsync_name(name, valid_length("UTF-8")) == utf8
    assert rsync_name(name, valid_length("ANSI_X3.4-1968")) == ascii


@needs_rsync
@pytest.mark.parametrize(("locale", "charset"), [("C.UTF-8", "UTF-8"), ("C", "ANSI_X3.4-1968")])
def test_select_output_prints_names_as_rsync_does(
    tmp_path: Path, locale: str, charset: str
) -> None:
    """Byte for byte, in a UTF-8 and in the C locale, names with odd bytes included."""
    root = tmp_path / "tree"
    root.mkdir()
    for name in ODD_NAMES:
        (root / os.fsdecode(name)).touch()
    (root / os.fsdecode(b"dir\n\xff")).mkdir()
    (root / os.fsdecode(b"dir\n\xff") / os.fsdecode(b"f\\#000")).touch()
    assert output_lines(root, "- tab*", charset) == rsync_output(root, "- tab*", tmp_path, locale)


# --- differential test against the real rsync -------------------------------------------------

NAMES = ["a", "b", "ab", "a.conf", "b.txt", ".hidden", "sub", "x.conf", "[a]", "a b", "é", "a b ",
         "a\nb", os.fsdecode(b"\xff"), "\\#123", "\r", "t\tb"]  # fmt: skip
SEGMENTS = ["a", "b", "sub", "*", "?", "a*", "*.conf", "*.txt", "[ab]", "[!a]*", "[^b]?*",
            "**", "a**", ".*", "?.conf", "[[:alpha:]]*", "[a-b]", "\\[a]", "é", "[!/]", "[a/]",
            "[a/]*", "a b ", "[ab", "*\\", "?\n?", "[[:nope:]]"]  # fmt: skip
TAILS = ["", "", "", "/", "/***", "/***/", "***/", "***", " ", "/ "]
# Every rule form we accept; the pattern follows directly (so "+_" is `+_PATTERN`).
VERBS = ["+ ", "- ", "+ ", "- ", "include ", "exclude ", "-! ", "+!_", "-,! ", "exclude,!_",
         "H ", "S ", "hide_", "show ", "P ", "R ", "-p ", "-s ", "-r ", "-x ", "-rs ",
         "include_", "+_"]  # fmt: skip
LINES = ["+ */", "- *", "!", "clear", "!,", "# comment", "", "- **", "+ *.conf", "-! */"]
INVALID = [None] * 12 + ["  ", " - a", "\t", "-foo"]  # rsync refuses these: so must we

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
    return lead + body + draw(st.sampled_from(TAILS))


rule_lines = st.one_of(
    st.builds(str.__add__, st.sampled_from(VERBS), patterns()),
    st.builds(str.__add__, st.sampled_from(VERBS), patterns()),
    st.sampled_from(LINES),
)


@st.composite
def rule_sets(draw: st.DrawFn) -> str:
    lines = draw(st.lists(rule_lines, max_size=8))
    invalid = draw(st.sampled_from(INVALID))
    if invalid is not None:
        lines.insert(draw(st.integers(0, len(lines))), invalid)
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@needs_rsync
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, rules=rule_sets())
def test_select_output_matches_rsync(tree: Tree, rules: str) -> None:
    """On generated trees, names and rule lists, select_output prints exactly what rsync
    prints (or both refuse the rules), and `selects` agrees with it path by path."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        make_tree(root, tree)
        theirs = rsync_output(root, rules, Path(tmp))
        try:
            parsed = FilterRules.parse(rules)
        except Invalid:
            assert theirs is None
            return
        assert output_lines(root, rules) == theirs
        selected = set(select_paths(root, parsed))
        for path in root.rglob("*"):
            is_dir = path.is_dir() and not path.is_symlink()
            relative = path.relative_to(root).as_posix()
            listed = relative + "/" if is_dir else relative
            assert parsed.selects(relative, is_dir) == (listed in selected)
