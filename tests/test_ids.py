"""Ids are UUIDv7 and strictly increasing within a process, even within one millisecond."""

from __future__ import annotations

import itertools

from powernode.ids import new_id


def test_ids_are_version_7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]  # many share a millisecond
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)
    assert all(a < b for a, b in itertools.pairwise(ids))
    assert len(set(ids)) == len(ids)
