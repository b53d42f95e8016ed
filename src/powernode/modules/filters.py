"""rsync filter rules (the include/exclude subset), matched exactly as rsync 3 matches them.

Syntax, one rule a line, as in an rsync merge file (lines end at LF or CR; a NUL ends a line early):

- `+ PATTERN` / `include PATTERN` and `- PATTERN` / `exclude PATTERN`: one space or `_` between
  the rule and its pattern, everything after it is the pattern, trailing spaces included. A `,`
  may follow the rule's name, then modifiers: `!` (the rule applies to paths the pattern does
  *not* match); `p` and `s`, which change nothing in what rsync sends; `r` (receiver side, unless
  with `s`) and `x` (extended attributes), which make the rule do nothing here.
- `hide`/`H` and `show`/`S` act as exclude and include (rsync's sender side is the one that
  decides what is sent); `protect`/`P` and `risk`/`R` concern the receiver only: accepted, no
  effect.
- `!` or `clear` alone clears the rules so far.
- Empty lines and lines starting with `#` or `;` are ignored.
- Anything else is an `Invalid` error naming the line. That covers what rsync refuses too (a line
  that is only whitespace or starts with whitespace, an unknown rule or modifier, a missing
  pattern) and what rsync accepts but we do not: merge rules (`.`, `:`, `merge`, `dir-merge`),
  the `/` (absolute path) and `C` (CVS) modifiers, and patterns of 4096 bytes or more (rsync
  drops those with a warning).

Matching (rsync's `exclude.c` and `lib/wildmatch.c`, byte for byte on the file-system encoding):

- The first rule that matches decides; a path no rule matches is included. Paths are relative
  to the transfer root; the root itself is never filtered.
- `?`, `*` and `[...]` never match `/`; a run of two or more `*` matches anything. `[!...]` and
  `[^...]` negate a class; `]` first in a class is literal; `a-z` ranges and `[:alpha:]`-style
  classes work; `\\` escapes the next character, but only in patterns containing `*`, `?` or
  `[` (elsewhere it is literal, as in rsync). A pattern wildmatch would abort on (an
  unterminated `[`, an unknown `[:class:]`, a trailing `\\`) never matches.
- A trailing `/` matches directories only (a symlink to a directory is not one); it is removed
  before anything else is looked at, so `dir/***/` is `dir/***` for directories. A trailing
  `/***` matches the directory itself and everything in it.
- A leading `/` anchors the pattern at the root. A pattern starting with `**` matches the path
  with a `/` put in front, so `**/x` also matches a top-level `x`. Otherwise a pattern with a
  `/` (not counting a trailing one) matches the path's last components, one more than it has
  slashes; one with `**` matches the path from its start or after any `/`; one with neither
  matches the last component only. So `a/**/b` does not match `a/b`: `**` has no special "zero
  directories" case. rsync counts a `/` inside a class too, which no component can hold: an
  unanchored `[!/]x` without `**` never matches.
- An excluded directory is not descended into, so `+ */`, `+ *.conf`, `- *` selects the `.conf`
  files in every directory.

Each rule becomes one regular expression, compiled once. Matching caches, per last component,
the first rule among those that look only at it; the cache is a plain dict, so one
`FilterRules` can be shared between threads.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from powernode.errors import Invalid, NotFound
from powernode.modules.rsync_names import rsync_name, valid_length

_NAME_CACHE_MAX = 1 << 16
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _ascii(test: Callable[[bytes], bool]) -> frozenset[int]:
    return frozenset(b for b in range(128) if test(bytes([b])))


_POSIX_CLASSES: dict[bytes, frozenset[int]] = {
    b"alnum": _ascii(bytes.isalnum),
    b"alpha": _ascii(bytes.isalpha),
    b"blank": frozenset(b" \t"),
    b"cntrl": frozenset([*range(32), 127]),
    b"digit": _ascii(bytes.isdigit),
    b"graph": frozenset(range(33, 127)),
    b"lower": _ascii(bytes.islower),
    b"print": frozenset(range(32, 127)),
    b"punct": frozenset(b for b in range(33, 127) if not bytes([b]).isalnum()),
    b"space": frozenset(b" \t\n\r\x0b\x0c"),
    b"upper": _ascii(bytes.isupper),
    b"xdigit": frozenset(b"0123456789abcdefABCDEF"),
}
_SLASH, _BACKSLASH, _DASH, _COLON, _OPEN, _CLOSE = b"/\\-:[]"


def _char_class(pattern: bytes, i: int) -> tuple[bytes, int] | None:
    """Regex for the class whose `[` is at `pattern[i - 1]`, and the index after its `]`; None
    where wildmatch aborts (no `]`, an unknown `[:name:]`), so the pattern never matches.

    Follows wildmatch's loop: the first member is taken before `]` can close the class.
    """

    def at(k: int) -> int:
        return pattern[k] if k < len(pattern) else 0

    negated = at(i) in b"!^" and at(i) != 0
    i += negated
    members: set[int] = set()
    prev, c = 0, at(i)
    while True:
        if c == 0:
            return None
        if c == _BACKSLASH:
            i += 1
            c = at(i)
            if c == 0:
                return None
            members.add(c)
        elif c == _DASH and prev and at(i + 1) not in (0, _CLOSE):
            i += 1
            c = at(i)
            if c == _BACKSLASH:
                i += 1
                c = at(i)
                if c == 0:
                    return None
            members.update(range(prev, c + 1))
            c = 0
        elif c == _OPEN and at(i + 1) == _COLON:
            end = pattern.find(b"]", i + 2)
            if end < 0:
                return None
            if end - i - 3 < 0 or pattern[end - 1] != _COLON:
                members.add(c)  # no ":]": the '[' is an ordinary member
            else:
                name = pattern[i + 2 : end - 1]
                if name not in _POSIX_CLASSES:
                    return None
                members |= _POSIX_CLASSES[name]
                i, c = end, 0
        else:
            members.add(c)
        prev = c
        i += 1
        c = at(i)
        if c == _CLOSE:
            break
    if negated:
        members = set(range(1, 256)) - members
    members.discard(_SLASH)
    return _byte_set(members), i + 1


def _byte_set(members: set[int]) -> bytes:
    """A regex matching exactly one byte of `members`."""
    if not members:
        return b"(?!)"
    ranges: list[bytes] = []
    ordered = sorted(members)
    start = prev = ordered[0]
    for b in [*ordered[1:], -1]:
        if b != prev + 1:
            ranges.append(b"\\x%02x-\\x%02x" % (start, prev))
            start = b
        prev = b
    return b"[" + b"".join(ranges) + b"]"


def _translate(pattern: bytes) -> tuple[bytes, int] | None:
    """Regex source matching what rsync's wildmatch matches for `pattern`, and how many `/` a
    match holds (those outside classes); None if wildmatch aborts on it: it never matches."""
    out: list[bytes] = []
    slashes = 0
    i = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            if i + 1 == len(pattern):
                return None
            out.append(re.escape(pattern[i + 1 : i + 2]))
            slashes += pattern[i + 1] == _SLASH
            i += 2
        elif c == b"*":
            stars = len(pattern[i:]) - len(pattern[i:].lstrip(b"*"))
            out.append(b".*" if stars > 1 else b"[^/]*")
            i += stars
        elif c == b"?":
            out.append(b"[^/]")
            i += 1
        elif c == b"[":
            translated = _char_class(pattern, i + 1)
            if translated is None:
                return None
            cls, i = translated
            out.append(cls)
        else:
            out.append(re.escape(c))
            slashes += c == b"/"
            i += 1
    return b"".join(out), slashes


def _negated(regex: bytes | None) -> bytes:
    """A regex fully matching exactly the strings `regex` does not (None: matches nothing)."""
    return b".*" if regex is None else b"(?!(?:" + regex + b")\\Z).*"


@dataclass(frozen=True)
class _Rule:
    """One compiled rule: regexes for non-directories and for directories (None: never).

    A `name_only` rule's regexes match the last path component; the others match `/PATH` for
    non-directories and `/PATH/` for directories.
    """

    include: bool
    name_only: bool
    file_regex: bytes | None
    dir_regex: bytes | None
    depth: int | None = None
    """For an anchored rule without `**`: the only path depth it can match (else None)."""

    @classmethod
    def compile(cls, include: bool, pattern: bytes, *, negate: bool = False) -> _Rule:
        # rsync's add_rule: the dir-only '/' goes first, then the pattern's shape is read.
        dir_only = len(pattern) > 1 and pattern.endswith(b"/")
        pattern = pattern[:-1] if dir_only else pattern
        wild = re.search(rb"[*?[]", pattern) is not None
        wild2 = wild and b"**" in pattern
        wild2_prefix = wild2 and pattern.startswith(b"**")
        wild3_suffix = wild2 and pattern.endswith(b"***")
        anchored = pattern.startswith(b"/")
        rest = pattern[1:] if anchored else pattern
        translated = _translate(rest) if wild else (re.escape(rest), rest.count(b"/"))
        body = translated[0] if translated else None
        slashes = translated[1] if translated else 0
        # rsync's slash_cnt counts every '/', those inside a class too: it decides whether the
        # pattern looks at the last component only or at the last slash_cnt + 1 of them.
        name_only = not wild2 and b"/" not in pattern
        if not anchored and not wild2 and slashes < pattern.count(b"/"):
            body = None  # more components than the body can span: it never matches
        if name_only:
            file_regex, dir_regex, depth = None if dir_only else body, body, None
        else:
            # Unanchored, it may start after any '/': with a '/' and no '**', the body spans a
            # fixed number of components, so that is "the last components"; with '**',
            # "anywhere".
            lead = b"/" if anchored else b"" if wild2_prefix else b".*/"
            # Directories get a '/' appended; a trailing '***' may match it (so 'dir/***'
            # matches 'dir'), any other pattern must end right before it.
            dir_tail = b"" if wild3_suffix else b"/"
            file_regex = None if dir_only or body is None else lead + body
            dir_regex = None if body is None else lead + body + dir_tail
            depth = (slashes + 1 if body is not None else 0) if anchored and not wild2 else None
        if negate:
            # rsync negates the match, and a dir-only rule's "no" for a non-directory with it.
            return cls(include, name_only, _negated(file_regex), _negated(dir_regex))
        return cls(include, name_only, file_regex, dir_regex, depth)


class _Matcher:
    """Finds the first rule matching a path of one kind (directory or not)."""

    def __init__(self, rules: tuple[_Rule, ...], is_dir: bool) -> None:
        regexes = [r.dir_regex if is_dir else r.file_regex for r in rules]
        names = [
            (i, rx) for i, (r, rx) in enumerate(zip(rules, regexes, strict=True)) if r.name_only
        ]
        paths = [
            (i, rx) for i, (r, rx) in enumerate(zip(rules, regexes, strict=True)) if not r.name_only
        ]
        self._none = len(rules)
        self._names_re, self._names_rule = self._combine(names)
        self._paths_re, self._paths_rule = self._combine(paths)
        self._first_path_rule = self._paths_rule[0] if self._paths_rule else self._none
        self._tail = b"/" if is_dir else b""
        self._by_name: dict[bytes, int] = {}

    @staticmethod
    def _combine(
        alternatives: list[tuple[int, bytes | None]],
    ) -> tuple[re.Pattern[bytes], list[int]]:
        # Alternation tries alternatives in order, so the group that matched is the first rule.
        kept = [(i, rx) for i, rx in alternatives if rx is not None]
        source = b"|".join(b"(" + rx + b")" for _, rx in kept) or b"(?!)"
        return re.compile(source, re.DOTALL), [i for i, _ in kept]

    def _first_by_name(self, name: bytes) -> int:
        match = self._names_re.fullmatch(name)
        return self._names_rule[match.lastindex - 1] if match and match.lastindex else self._none

    def first(self, path: bytes, name: bytes) -> int:
        """Index of the first rule matching `path` (whose last component is `name`)."""
        first = self._by_name.get(name)
        if first is None:
            if len(self._by_name) >= _NAME_CACHE_MAX:
                self._by_name.clear()
            first = self._by_name[name] = self._first_by_name(name)
        if self._first_path_rule < first:
            match = self._paths_re.fullmatch(b"/" + path + self._tail)
            if match and match.lastindex:
                first = min(first, self._paths_rule[match.lastindex - 1])
        return first


class FilterRules:
    """An ordered list of rsync include/exclude rules; see the module docstring."""

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        # With only anchored rules without '**', no rule matches a path deeper than the deepest
        # pattern: such paths only inherit their ancestors' fate (see `unselected`).
        depths = [rule.depth for rule in rules if rule.depth is not None]
        bounded = bool(rules) and len(depths) == len(rules)
        self._depth_limit = max(depths) if bounded else None
        self._verdicts = (*(r.include for r in rules), True)
        self._files = _Matcher(rules, is_dir=False)
        self._dirs = _Matcher(rules, is_dir=True)

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "rules") -> FilterRules:
        """Parse rule lines (bytes as rsync reads them; str is encoded like a file name);
        `Invalid` names the line (of `source`) and what is wrong with it."""
        data = text if isinstance(text, bytes) else os.fsencode(text)
        rules: list[_Rule] = []
        for number, line in enumerate(re.split(rb"\r\n?|\n", data), start=1):
            try:
                parsed = _parse_line(line.partition(b"\0")[0])  # rsync reads C strings
            except ValueError as e:
                shown = os.fsdecode(line)
                raise Invalid(f"{source} line {number}: {shown!r}: {e}", line=number) from None
            if parsed == "clear":
                rules.clear()
            elif parsed is not None:
                rules.append(parsed)
        return cls(tuple(rules))

    def _included(self, path: bytes, name: bytes, is_dir: bool) -> bool:
        matcher = self._dirs if is_dir else self._files
        return self._verdicts[matcher.first(path, name)]

    def decide(self, path: str, is_dir: bool) -> bool:
        """Whether the rules alone include `path` (relative, e.g. "etc/nginx"), ignoring parents."""
        raw = _relative(path)
        return self._included(raw, raw.rpartition(b"/")[2], is_dir)

    @property
    def depth_limit(self) -> int | None:
        """The deepest path (in components) any rule can match, when every rule is anchored
        and free of `**`; None when a rule can match at any depth."""
        return self._depth_limit

    def unselected(self, paths: Iterable[tuple[str, bool]]) -> list[str]:
        """Of `paths` ((relative path, is_dir), each directory before its contents), those a
        walk would not transfer: excluded by the rules, or under an excluded directory.

        The batch form of `selects` for lists that are not on disk (module masks); it skips
        the per-path validation, so callers pass paths already checked.
        """
        included = self._included
        limit = self._depth_limit
        dropped_dirs: set[str] = set()
        dropped: list[str] = []
        for path, is_dir in paths:
            if path.rpartition("/")[0] in dropped_dirs:
                excluded = True
            elif limit is not None and path.count("/") >= limit:
                excluded = False
            else:
                raw = path.encode("utf-8", "surrogateescape")
                excluded = not included(raw, raw.rpartition(b"/")[2], is_dir)
            if excluded:
                dropped.append(path)
                if is_dir:
                    dropped_dirs.add(path)
        return dropped

    def selects(self, path: str, is_dir: bool) -> bool:
        """Whether `path` would be transferred: it and every ancestor directory are included."""
        raw = _relative(path)
        parts = raw.split(b"/")
        ancestors = (b"/".join(parts[: n + 1]) for n in range(len(parts) - 1))
        return all(self._included(a, a.rpartition(b"/")[2], True) for a in ancestors) and (
            self._included(raw, parts[-1], is_dir)
        )


# rsync's parse_rule_tok: a rule's initial letter picks the one word it may spell out.
_WORDS = {
    b"c": (b"clear", b"!"),
    b"d": (b"dir-merge", b":"),
    b"e": (b"exclude", b"-"),
    b"h": (b"hide", b"H"),
    b"i": (b"include", b"+"),
    b"m": (b"merge", b"."),
    b"p": (b"protect", b"P"),
    b"r": (b"risk", b"R"),
    b"s": (b"show", b"S"),
}
_SPACE = frozenset(b" \t\v\f")  # C's isspace, less the line ends
_USE = "use +, -, include, exclude, ! or clear"
_MAX_PATTERN = 4095  # rsync drops longer patterns (MAXPATHLEN) with a warning


def _parse_line(line: bytes) -> _Rule | Literal["clear"] | None:
    """One line of rules: a rule, "clear", or None (blank or comment); ValueError saying why
    it is no rule. Mirrors rsync's parse_rule_tok, refusing what we do not implement."""
    if not line or line[0] in b"#;":
        return None
    if line[0] in _SPACE:
        raise ValueError(
            "a line of only whitespace is not blank for rsync; make it empty"
            if line.strip(bytes(_SPACE)) == b""
            else "a rule cannot start with whitespace"
        )
    initial = line[:1]
    if initial in _WORDS:
        word, kind = _WORDS[initial]
        after = line[len(word) : len(word) + 1]
        if not line.startswith(word) or (after and after[0] not in _SPACE and after not in b"_,"):
            raise ValueError(f"unknown rule {os.fsdecode(line.split()[0])!r}; {_USE}")
        end = len(word) if after == b"," else len(word) - 1  # the last byte of the rule's name
    else:
        kind, end = initial, 1 if line[1:2] == b"," else 0
    if kind not in b"+-HSPR!.:":
        raise ValueError(f"unknown rule {os.fsdecode(line.split()[0])!r}; {_USE}")
    if kind == b"!":
        if line[end + 1 :]:
            raise ValueError(
                "'!' and 'clear' take no pattern; alone on a line they clear the rules"
            )
        return "clear"
    if kind in b".:":
        raise ValueError("merge rules ('merge', 'dir-merge', '.', ':') are not supported; " + _USE)
    start = end + 1
    while start < len(line) and line[start] not in b" _":
        start += 1
    modifiers, pattern = line[end + 1 : start], line[start + 1 :]
    negate, ignored = _modifiers(modifiers, side_given=kind in b"HSPR")
    if not pattern:
        raise ValueError(f"missing pattern after {os.fsdecode(line[:start])!r}")
    if len(pattern) > _MAX_PATTERN:
        raise ValueError(f"pattern longer than {_MAX_PATTERN} bytes: rsync ignores it")
    if ignored or kind in b"PR":  # receiver-side or xattr rules: not used to choose what is sent
        return None
    return _Rule.compile(kind in b"+S", pattern, negate=negate)


def _modifiers(modifiers: bytes, *, side_given: bool) -> tuple[bool, bool]:
    """(negate, ignored) for a rule's modifiers; ValueError for the ones rsync refuses and the
    ones we do not implement."""
    negate = sender = receiver = xattr = False
    for m in modifiers.decode("latin-1"):
        if m == "!":
            negate = True
        elif m == "p":
            pass  # perishable: only matters when deleting
        elif m in "rs" and not side_given:
            sender, receiver = sender or m == "s", receiver or m == "r"
        elif m == "x":
            xattr = True
        elif m == "/":
            raise ValueError("the '/' modifier (match the absolute path) is not supported")
        elif m == "C" and not side_given:
            raise ValueError("the 'C' modifier (CVS excludes) is not supported")
        else:
            raise ValueError(f"invalid rule modifier {m!r} (rsync refuses it too); {_USE}")
    # A receiver-only rule is dropped from the list the sender decides with (`-r`, and `-rs`
    # applies to both sides); xattr rules only match extended attribute names.
    return negate, xattr or (receiver and not sender)


def _relative(path: str) -> bytes:
    if not path or path.startswith("/") or path.endswith("/"):
        raise Invalid(f"path {path!r} must be relative, without leading or trailing '/'")
    return os.fsencode(path)


def select_raw(root: Path, rules: FilterRules) -> list[bytes]:
    """Paths under `root` that `rules` select, as bytes, directories with a trailing '/',
    in no particular order.

    Excluded directories are not descended into; symlinks are not followed and count as
    non-directories, as with `rsync -a`.
    """
    top = os.fsencode(root)
    if not os.path.isdir(top):
        raise NotFound(f"{root} is not a directory")
    included = rules._included
    selected: list[bytes] = []
    pending = [b""]
    while pending:
        prefix = pending.pop()
        with os.scandir(top + b"/" + prefix) as entries:
            for entry in entries:
                name = entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                path = prefix + name
                if included(path, name, is_dir):
                    if is_dir:
                        path += b"/"
                        pending.append(path)
                    selected.append(path)
    return selected


def select_paths(root: Path, rules: FilterRules) -> list[str]:
    """Sorted paths under `root` that `rules` select, directories with a trailing '/' (names
    that are not valid in the file-system encoding keep their bytes as surrogates)."""
    return sorted([p.decode(_FS_ENCODING, _FS_ERRORS) for p in select_raw(root, rules)])


def select_output(
    root: Path, rules: str | bytes, charset: str = "UTF-8", *, source: str = "rules"
) -> bytes:
    """What `powernode module select ROOT --rules FILE` prints: each selected path as rsync's
    `--out-format=%n` prints it in a locale of `charset` (see `rsync_name`), one a line,
    sorted as bytes. `source` names the rules in errors."""
    parsed = FilterRules.parse(rules, source=source)
    valid = valid_length(charset)
    names = sorted(rsync_name(p, valid) for p in select_raw(root, parsed))
    return b"".join(name + b"\n" for name in names)
