"""File entries of a module version or a composed tree, and their canonical encoding.

An entry is one path with its type, permission bits, owner, size, mtime and, for regular
files, the sha256 of the content and its fs-verity digest (SHA-256, 4 KiB blocks); for
symlinks, the target. Paths are relative, `/`-separated, without `.` or `..` components, and
UTF-8 text (the encoding is JSON).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from powernode.errors import Invalid

try:
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # node images carry the agent without orjson; same bytes for these rows

    def _dumps(doc: Any) -> bytes:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads

FILE, DIR, SYMLINK = "file", "dir", "symlink"
ENCODING_VERSION = 1


class Entry(NamedTuple):
    """Immutable; a tuple so that decoding 100,000 entries costs little."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime: int = 0
    sha256: str | None = None
    verity: str | None = None
    target: str | None = None

    def same_as(self, other: Entry) -> bool:
        """Whether two modules providing this path agree (mtime does not count)."""
        return (
            self.type == other.type
            and self.mode == other.mode
            and self.uid == other.uid
            and self.gid == other.gid
            and self.sha256 == other.sha256
            and self.target == other.target
        )

    def difference(self, other: Entry) -> str:
        """What differs, in words, for conflict reports."""
        if self.type != other.type:
            return f"type {self.type} vs {other.type}"
        parts = []
        if self.sha256 != other.sha256 or self.target != other.target:
            parts.append("content")
        if self.mode != other.mode:
            parts.append(f"mode {self.mode:o} vs {other.mode:o}")
        if (self.uid, self.gid) != (other.uid, other.gid):
            parts.append(f"owner {self.uid}:{self.gid} vs {other.uid}:{other.gid}")
        return ", ".join(parts)

    def document(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if v is not None}


def check_path(path: str) -> str:
    """`path` if it is a safe relative path inside a tree, else Invalid saying why.

    A backslash is an ordinary character on Linux (systemd's escaped unit names hold them:
    `system-systemd\\x2dcryptsetup.slice`), so it is allowed; only `/` separates components.
    """
    if not path or path.startswith("/") or "\x00" in path:
        raise Invalid(f"path {path!r} is not a relative path inside the module tree")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Invalid(
            f"path {path!r} has an empty, '.' or '..' component; it could escape the root"
        )
    return path


def parents(path: str) -> Iterable[str]:
    """Every proper ancestor directory of `path`, outermost first."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


_FIELDS = ("path", "type", "mode", "uid", "gid", "size", "mtime", "sha256", "verity", "target")


def encode_entries(entries: Iterable[Entry]) -> bytes:
    """Deterministic bytes: sorted by path, one compact row per entry."""
    rows = [[getattr(e, f) for f in _FIELDS] for e in sorted(entries, key=lambda e: e.path)]
    return _dumps({"version": ENCODING_VERSION, "fields": _FIELDS, "rows": rows})


def decode_entries(data: bytes) -> list[Entry]:
    doc = _loads(data)
    if doc.get("version") != ENCODING_VERSION or tuple(doc.get("fields", ())) != _FIELDS:
        raise Invalid("stored entry list has an unknown encoding")
    make = Entry._make
    return [make(row) for row in doc["rows"]]
