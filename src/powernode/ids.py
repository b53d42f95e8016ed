"""Identifiers: UUIDv7 (RFC 9562), so ids sort by creation time and keyset pagination by id is
chronological on both SQLite and PostgreSQL.

Within one process ids are strictly increasing (RFC 9562's "fixed-length dedicated counter"
method, section 6.2): ids made in the same millisecond count up in the 12 `rand_a` bits, so
events recorded one after another sort in the order they were recorded. Across processes,
ids order by millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_millis = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def new_id() -> uuid.UUID:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, version, a 12-bit counter, 62 random bits."""
    global _last_millis, _counter
    with _lock:
        millis = time.time_ns() // 1_000_000
        if millis > _last_millis:
            _last_millis = millis
            # Start the counter low but random, leaving room to count up within the ms.
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        elif _counter < _COUNTER_MAX:
            _counter += 1
        else:  # 3,000+ ids in one millisecond: borrow the next millisecond
            _last_millis += 1
            _counter = 0
        millis, counter = _last_millis, _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (
        ((millis & ((1 << 48) - 1)) << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    )
    return uuid.UUID(int=value)
