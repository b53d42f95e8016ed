"""File names as rsync prints them: `--out-format=%n` escapes, which depend on the locale.

rsync (log.c) passes each log line through iconv from the locale's charset to itself and then
through `filtered_fwrite`: bytes iconv refuses, control bytes but TAB, and the backslash of a
literal `\\#ddd` are written as `\\#ooo`. `module select` prints names the same way so that its
output equals rsync's byte for byte.
"""

from __future__ import annotations

import codecs
import locale
import os
import re
import sys
from collections.abc import Callable

_NEEDS_ESCAPE = re.compile(rb"[\x00-\x08\x0a-\x1f\x80-\xff]|\\#[0-9]{3}")
_HASH_ESCAPE = re.compile(rb"\\#[0-9]{3}")


def rsync_name(name: bytes, valid: Callable[[bytes, int], int] | None = None) -> bytes:
    """`name` as rsync prints it in a log line (log.c's rwrite and filtered_fwrite, without the
    newline): a byte that does not start a valid character of the locale's charset (as iconv
    sees it), a control byte other than TAB, and the backslash of a literal `\\#ddd` become
    `\\#ooo` (octal); a leading CR stays as it is. `valid(name, i)` gives the length of the
    character at `i`, 0 if it is invalid; the default is UTF-8 as glibc reads it.
    """
    if not _NEEDS_ESCAPE.search(name):
        return name  # the common case: printable ASCII
    valid = valid or _glibc_utf8_length
    out = bytearray()
    i = 1 if name.startswith(b"\r") else 0  # rwrite writes a leading CR before filtering
    out += name[:i]
    while i < len(name):
        length = valid(name, i)
        byte = name[i]
        if not length or (byte < 0x20 and byte != 0x09) or _HASH_ESCAPE.match(name, i):
            out += b"\\#%03o" % byte
            i += 1
        else:
            out += name[i : i + length]
            i += length
    return bytes(out)


def _glibc_utf8_length(data: bytes, i: int) -> int:
    """Length of the UTF-8 character glibc's iconv reads at `data[i]`, 0 if it refuses it.

    Like Python it refuses overlong forms, surrogates and truncated sequences, but it keeps
    the original UTF-8's five- and six-byte forms: any code point up to 0x7fffffff.
    """
    first = data[i]
    if first < 0x80:
        return 1
    if first < 0xC2 or first > 0xFD:
        return 0
    length = (
        2
        if first < 0xE0
        else 3
        if first < 0xF0
        else 4
        if first < 0xF8
        else 5
        if first < 0xFC
        else 6
    )
    tail = data[i + 1 : i + length]
    if len(tail) < length - 1 or any(b & 0xC0 != 0x80 for b in tail):
        return 0
    code = first & (0x7F >> length)
    for b in tail:
        code = code << 6 | b & 0x3F
    if code < _SHORTEST[length] or 0xD800 <= code < 0xE000:
        return 0
    return length


_SHORTEST = {2: 0x80, 3: 0x800, 4: 0x10000, 5: 0x200000, 6: 0x4000000}  # below: overlong


def _ascii_length(data: bytes, i: int) -> int:
    return 1 if data[i] < 0x80 else 0


def valid_length(charset: str) -> Callable[[bytes, int], int]:
    """The `valid` function of `rsync_name` for a locale's charset (e.g. "UTF-8")."""
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        return _ascii_length
    if name == "utf-8":
        return _glibc_utf8_length
    if name == "ascii":
        return _ascii_length

    def length(data: bytes, i: int) -> int:
        # Other charsets: the shortest prefix Python decodes (close to iconv for most).
        for n in range(1, 5):
            try:
                data[i : i + n].decode(name)
            except UnicodeDecodeError:
                continue
            return n
        return 0

    return length


def rsync_charset() -> str:
    """The charset rsync would check names against here: its LC_CTYPE locale's."""
    # Python coerces a C or POSIX locale to C.UTF-8 and then turns on its UTF-8 mode (PEP 538,
    # PEP 540); rsync stays in C, whose charset is ASCII. Unless asked for explicitly, UTF-8
    # mode therefore means the locale was C. (Asked for with PYTHONUTF8=1 under C, we cannot
    # tell, and answer UTF-8.)
    if sys.flags.utf8_mode and "utf8" not in sys._xoptions and not os.environ.get("PYTHONUTF8"):
        return "ascii"
    return locale.nl_langinfo(locale.CODESET) or "ascii"
