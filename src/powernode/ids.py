"""Identifiers: UUIDv7 (RFC 9562), so ids sort by creation time and keyset pagination by id is
chronological on both SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
import uuid


def new_id() -> uuid.UUID:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, version, then 74 random bits."""
    millis = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (millis << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return uuid.UUID(int=value)
