"""The entry-list cache is bounded by entries held, evicting the least recently used list."""

from __future__ import annotations

from pathlib import Path

from powernode.modules.entries import DIR, Entry, encode_entries
from powernode.modules.service import EntryCache
from powernode.modules.store import ContentStore


def test_the_cache_evicts_least_recently_used_lists_past_its_entry_budget(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digests = [
        store.put_bytes(
            encode_entries(
                [Entry(path=f"d{i}-{n}", type=DIR, mode=0o755, uid=0, gid=0) for n in range(10)]
            )
        )
        for i in range(3)
    ]
    cache = EntryCache(max_entries=20)
    first = cache.get(store, digests[0])
    cache.get(store, digests[1])
    assert cache.get(store, digests[0]) is first  # hit, and now most recently used
    cache.get(store, digests[2])  # 30 entries held: evicts digests[1], the least recent
    assert cache.get(store, digests[0]) is first
    assert len(cache.get(store, digests[1])) == 10  # decoded again after eviction
