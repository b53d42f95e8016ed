"""rsync filter rules (the include/exclude subset), matched exactly as rsync 3 matches them.

Syntax, one rule a line (lines end at LF, CR or CRLF):

- `+ PATTERN` / `include PATTERN` and `- PATTERN` / `exclude PATTERN`, one space before the
  pattern; everything after that space is the pattern, trailing spaces included, as in rsync.
- `!` alone clears the rules so far.
- Empty or all-whitespace lines and lines starting with `#` or `;` are ignored.
- Anything else is an `Invalid` error naming the line: rsync's modifiers (`-!`, `-/`, `+,x`,
  `+_PATTERN`), merge rules (`.`, `:`, `merge`), `P`/`R`/`H`/`S` and `clear` are not supported,
  and neither are patterns rsync would silently never match (an unterminated `[`, an unknown
  `[:class:]`, a trailing `\\`).

Matching (rsync's `exclude.c` and `lib/wildmatch.c`, byte for byte on the file-system encoding):

- The first rule that matches decides; a path no rule matches is included. Paths are relative
  to the transfer root; the root itself is never filtered.
- `?`, `*` and `[...]` never match `/`; a run of two or more `*` matches anything. `[!...]` and
  `[^...]` negate a class; `]` first in a class is literal; `a-z` ranges and `[:alpha:]`-style
  classes work; `\\` escapes the next character, but only in patterns containing `*`, `?` or
  `[` (elsewhere it is literal, as in rsync).
- A trailing `/` matches directories only (a symlink to a directory is not one). A trailing
  `/***` matches the directory itself and everything in it.
- A leading `/` anchors the pattern at the root. A pattern starting with `**` matches the path
  with a `/` put in front, so `**/x` also matches a top-level `x`. Otherwise a pattern with a
  `/` (not counting a trailing one) matches the path's last components, as many as it has; one
  with `**` matches the path from its start or after any `/`; one with neither matches the last
  component only. So `a/**/b` does not match `a/b`: `**` has no special "zero directories" case.
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

from powernode.errors import Invalid, NotFound

_VERDICTS = {"+": True, "include": True, "-": False, "exclude": False}
_UNSUPPORTED = {"merge", "dir-merge", ".", ":", "clear", "protect", "risk", "hide", "show"}
_UNSUPPORTED |= {"P", "R", "H", "S"}
_USE = "use +, -, include, exclude or !"
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


def _char_class(pattern: bytes, i: int) -> tuple[bytes, int]:
    """Regex for the class whose `[` is at `pattern[i - 1]`, and the index after its `]`.

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
            raise ValueError("unterminated character class; write a literal '[' as '\\['")
        if c == _BACKSLASH:
            i += 1
            c = at(i)
            if c == 0:
                raise ValueError("unterminated character class")
            members.add(c)
        elif c == _DASH and prev and at(i + 1) not in (0, _CLOSE):
            i += 1
            c = at(i)
            if c == _BACKSLASH:
                i += 1
                c = at(i)
                if c == 0:
                    raise ValueError("unterminated character class")
            members.update(range(prev, c + 1))
            c = 0
        elif c == _OPEN and at(i + 1) == _COLON:
            end = pattern.find(b"]", i + 2)
            if end < 0:
                raise ValueError("unterminated character class")
            if end - i - 3 < 0 or pattern[end - 1] != _COLON:
                members.add(c)  # no ":]": the '[' is an ordinary member
            else:
                name = pattern[i + 2 : end - 1]
                if name not in _POSIX_CLASSES:
                    raise ValueError(f"unknown character class '[:{name.decode()}:]'")
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


def _translate(pattern: bytes) -> bytes:
    """Regex source matching what rsync's wildmatch matches for `pattern`."""
    out: list[bytes] = []
    i = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            if i + 1 == len(pattern):
                raise ValueError("pattern ends with a lone '\\'")
            out.append(re.escape(pattern[i + 1 : i + 2]))
            i += 2
        elif c == b"*":
            stars = len(pattern[i:]) - len(pattern[i:].lstrip(b"*"))
            out.append(b".*" if stars > 1 else b"[^/]*")
            i += stars
        elif c == b"?":
            out.append(b"[^/]")
            i += 1
        elif c == b"[":
            cls, i = _char_class(pattern, i + 1)
            out.append(cls)
        else:
            out.append(re.escape(c))
            i += 1
    return b"".join(out)


@dataclass(frozen=True)
class _Rule:
    """One compiled rule: regexes for non-directories (None: never) and for directories.

    A `name_only` rule's regexes match the last path component; the others match `/PATH` for
    non-directories and `/PATH/` for directories.
    """

    include: bool
    name_only: bool
    file_regex: bytes | None
    dir_regex: bytes
    depth: int | None = None
    """For an anchored rule without `**`: the only path depth it can match (else None)."""

    @classmethod
    def compile(cls, include: bool, text: str) -> _Rule:
        pattern = os.fsencode(text)
        wild = re.search(rb"[*?[]", pattern) is not None
        wild2 = wild and b"**" in pattern
        wild2_prefix = wild2 and pattern.startswith(b"**")
        wild3_suffix = wild2 and pattern.endswith(b"***")
        dir_only = len(pattern) > 1 and pattern.endswith(b"/")
        pattern = pattern[:-1] if dir_only else pattern
        has_slash = b"/" in pattern
        anchored = pattern.startswith(b"/")
        rest = pattern[1:] if anchored else pattern
        body = _translate(rest) if wild else re.escape(rest)
        if not has_slash and not wild2:
            return cls(include, True, None if dir_only else body, body)
        # Unanchored, it may start after any '/': with a '/' and no '**', the body spans a fixed
        # number of components, so that is "the last components"; with '**', "anywhere".
        lead = b"/" if anchored else b"" if wild2_prefix else b".*/"
        # Directories get a '/' appended; a trailing '***' may match it (so 'dir/***' matches
        # 'dir'), any other pattern must end right before it.
        dir_tail = b"" if wild3_suffix else b"/"
        depth = rest.count(b"/") + 1 if anchored and not wild2 else None
        return cls(include, False, None if dir_only else lead + body, lead + body + dir_tail, depth)


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
    def parse(cls, text: str, *, source: str = "rules") -> FilterRules:
        """Parse rule lines; `Invalid` names the line (of `source`) and what is wrong with it."""
        rules: list[_Rule] = []
        for number, line in enumerate(re.split(r"\r\n?|\n", text), start=1):
            if not line.strip() or line[0] in "#;":
                continue
            if line == "!":
                rules.clear()
                continue
            try:
                word, _, pattern = line.partition(" ")
                rules.append(_Rule.compile(_verdict(word, pattern, line), pattern))
            except ValueError as e:
                raise Invalid(f"{source} line {number}: {line!r}: {e}", line=number) from None
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


def _verdict(word: str, pattern: str, line: str) -> bool:
    """Whether a rule spelled `word PATTERN` includes; ValueError saying why it is no rule."""
    if word in _VERDICTS:
        if not pattern:
            raise ValueError(f"missing pattern after {word!r}")
        return _VERDICTS[word]
    if line[0].isspace():
        raise ValueError("a rule cannot start with whitespace")
    if word.startswith("!"):
        raise ValueError("'!' takes no pattern; a line holding just '!' clears the rules")
    if word[0] in "+-" or re.match(r"(include|exclude)[,_]", word):
        raise ValueError(f"rule modifiers are not supported ({word!r}); write '+ PATTERN'")
    if re.split(r"[,_]", word)[0] in _UNSUPPORTED:
        raise ValueError(f"rsync rule {word!r} is not supported; {_USE}")
    raise ValueError(f"unknown rule {word!r}; {_USE}")


def _relative(path: str) -> bytes:
    if not path or path.startswith("/") or path.endswith("/"):
        raise Invalid(f"path {path!r} must be relative, without leading or trailing '/'")
    return os.fsencode(path)


def select_paths(root: Path, rules: FilterRules) -> list[str]:
    """Sorted paths under `root` that `rules` select, directories with a trailing '/'.

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
    return sorted([p.decode(_FS_ENCODING, _FS_ERRORS) for p in selected])


def select_output(root: Path, rules_text: str) -> str:
    """What `powernode module select ROOT --rules FILE` prints: one selected path a line."""
    return "".join(f"{p}\n" for p in select_paths(root, FilterRules.parse(rules_text)))
