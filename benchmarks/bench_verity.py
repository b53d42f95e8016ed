"""fs-verity digest benchmark: `fsverity_digest_file` against the real `fsverity digest`.

The script writes a file of `--size-mib` MiB (default 1024) of random data in a temp dir, reads
it once so that both contenders run with the file in the page cache (dropping the cache needs
privileges a benchmark should not take), then times `fsverity digest FILE` (a subprocess: its
start-up, about a millisecond, is included) and `fsverity_digest_file(FILE)` in the same
process, alternating, `--repeats` times each (default 3). It checks both print the same digest
and prints one JSON object: median seconds, MB/s (10^6 bytes) for both, the throughput ratio
ours/theirs, the target (ratio >= 0.8) and `pass`. The temp dir is removed whatever happens.

Run it with `.venv/bin/python benchmarks/bench_verity.py [--size-mib N] [--repeats N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from powernode.modules.verity import fsverity_digest_file
from powernode.testing import machine_info

RATIO_TARGET = 0.8
WRITE_CHUNK = 16 * 1024 * 1024


def write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(WRITE_CHUNK, left))
            file.write(chunk)
            left -= len(chunk)


def read_once(path: Path) -> None:
    """Pull the file into the page cache so that neither contender pays for the disk."""
    buffer = bytearray(WRITE_CHUNK)
    with path.open("rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


def theirs(tool: str, path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([tool, "digest", str(path)], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    return elapsed, proc.stdout.split(" ", 1)[0]


def ours(path: Path) -> tuple[float, str]:
    start = time.perf_counter()
    digest = fsverity_digest_file(path)
    return time.perf_counter() - start, digest


def run(size: int, repeats: int) -> dict[str, Any]:
    tool = shutil.which("fsverity")
    if tool is None:
        raise SystemExit("fsverity not found: install the Debian package fsverity (make setup)")
    with tempfile.TemporaryDirectory(prefix="bench-verity-") as tmp:
        path = Path(tmp) / "data.bin"
        write_random_file(path, size)
        read_once(path)
        their_times: list[float] = []
        our_times: list[float] = []
        digests: set[str] = set()
        for _ in range(repeats):
            elapsed, digest = theirs(tool, path)
            their_times.append(elapsed)
            digests.add(digest)
            elapsed, digest = ours(path)
            our_times.append(elapsed)
            digests.add(digest)
    if len(digests) != 1:
        raise SystemExit(f"digests differ: {sorted(digests)}")
    their_median = statistics.median(their_times)
    our_median = statistics.median(our_times)
    ratio = their_median / our_median  # throughput ours/theirs = time theirs/ours
    return {
        "benchmark": "fsverity_digest_file vs fsverity digest",
        "machine": machine_info(),
        "size_bytes": size,
        "repeats": repeats,
        "digest": digests.pop(),
        "fsverity_median_s": round(their_median, 4),
        "ours_median_s": round(our_median, 4),
        "fsverity_times_s": [round(t, 4) for t in their_times],
        "ours_times_s": [round(t, 4) for t in our_times],
        "fsverity_mb_s": round(size / their_median / 1e6, 1),
        "ours_mb_s": round(size / our_median / 1e6, 1),
        "ratio": round(ratio, 3),
        "target": f"ratio >= {RATIO_TARGET}",
        "pass": ratio >= RATIO_TARGET,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.size_mib * 1024 * 1024, args.repeats)
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
