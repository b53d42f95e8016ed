"""Module activation benchmark: pull + verify + activate a module against skopeo + tar.

Target: pulling, verifying and activating a 1 GiB, 20,000-file module over loopback runs at
>= 70% of the throughput of `skopeo copy` plus `tar -x` of the same layer on the same machine,
measured in the same run (ratio = median peer seconds / median our seconds >= 0.70).

Setup (not timed): `--files` files (default 20,000) totalling `--size-mib` MiB (default 1024) in
`--files / 100` directories (200 by default), sizes spread between 0.5x and 1.5x of the mean.
Each file is half incompressible (`random.randbytes`, seeded) and half text-like (random bytes
mapped onto 16 symbols: 4 bits of entropy per byte, which zstd halves but cannot collapse), so
the layer is about 3/4 of the file bytes. The files go into a ContentStore; the artifact is
built once with `build_module_artifact` (zstd level 9), written to an OCI layout, signed with a
fresh `KeySigner` (cosign tag flavour and OCI referrer) and pushed to Debian's docker-registry
on a free loopback port.

Timed, `--repeats` times each (default 3), alternating, the order flipped every repetition;
every run writes into a fresh directory and starts after `sync` (whatever the previous run left
is removed, and its writeback flushed, before the clock starts):

- ours: the agent's `apply_modules` on the payload the control plane would send (`http://`
  reference, insecure, a trust policy pinning the key, the `files` map with every file's sha256
  and fs-verity digest): pull the manifest and signatures, check digest and signature, then
  stream the layer from the registry through the safe reader into the tree while it downloads
  (each file's sha256 and fs-verity digest computed from the bytes written), compare with the
  map, then activate a generation in a new state directory: an overlay mount when root, else
  materialized. `--lowers` picks the overlay's lower layers: EROFS images of the trees where
  mkfs.erofs and the kernel allow (the agent's default), the tree directories, or `both`
  (the default: both kinds of run alternate with the peer's, and the ratio and `met` are the
  EROFS runs'; the directories' go in `ours_directories_lowers`);
- peer: `skopeo copy --src-tls-verify=false docker://... oci:DIR:TAG`, then
  `tar --zstd -xf LAYER -C OUT`.

Throughput is MB/s (10^6 bytes) of the layer and of the file bytes. Prints one JSON object.
Temporary directories are removed, any overlay the activation mounted is unmounted and the
registry is stopped, whatever happens.

Run from the repository root: `.venv/bin/python benchmarks/bench_activation.py
[--files N] [--size-mib M] [--repeats R] [--lowers erofs|directories|both]` (quick:
`--files 2000 --size-mib 100`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from powernode.agent.modules.activate import ActivationOptions
from powernode.agent.modules.apply import ApplyOptions, ApplyResult, apply_modules
from powernode.agent.modules.generations import (
    DIRECTORIES,
    ENABLED,
    EROFS,
    Generations,
    lower_mounts,
)
from powernode.agent.modules.mounts import MountError, unmount
from powernode.agent.modules.request import parse_request
from powernode.artifacts import media
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.package import build_module_artifact
from powernode.artifacts.registry import push_layout
from powernode.artifacts.signing import KeySigner, sign_manifest, signature_tag
from powernode.artifacts.trust import public_key_pem
from powernode.modules.entries import DIR, FILE, Entry
from powernode.modules.store import ContentStore
from powernode.modules.verity import fsverity_digest_bytes
from powernode.testing import machine_info

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.artifacts.servers import Registry, start_registry, stop  # noqa: E402

RATIO_TARGET = 0.70
BOTH = "both"
NAME, VERSION, REPO = "bench", "1.0", "bench/activation"
CREATED = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
MTIME = 1_714_564_800
FILES_PER_DIR = 100
# 256 byte values onto 16 symbols (15 letters and a newline): 4 bits of entropy per byte.
_TEXT = bytes(b"abcdefghijklmno\n"[i % 16] for i in range(256))


@dataclass(frozen=True)
class Module:
    """The module's entries, and what the control plane would say of its files."""

    entries: list[Entry]
    files: dict[str, dict[str, str]]
    file_bytes: int
    dirs: int


def make_module(store: ContentStore, count: int, total: int, seed: int) -> Module:
    """`count` files of `total` bytes in all, in `count / FILES_PER_DIR` directories."""
    rng = random.Random(seed)
    ndirs = max(1, count // FILES_PER_DIR)
    mean = total // count
    sizes = []
    for _ in range(count // 2):
        spread = rng.randrange(mean // 2 + 1)
        sizes += [mean + spread, mean - spread]
    if len(sizes) < count:
        sizes.append(mean)
    sizes[-1] += total - sum(sizes)
    entries = [Entry("opt", DIR, 0o755, 0, 0, mtime=MTIME)]
    entries.append(Entry("opt/bench", DIR, 0o755, 0, 0, mtime=MTIME))
    entries += [Entry(f"opt/bench/d{d:03d}", DIR, 0o755, 0, 0, mtime=MTIME) for d in range(ndirs)]
    files: dict[str, dict[str, str]] = {}
    for i, size in enumerate(sizes):
        random_part = size // 2
        data = rng.randbytes(random_part) + rng.randbytes(size - random_part).translate(_TEXT)
        path = f"opt/bench/d{i % ndirs:03d}/f{i:05d}.dat"
        sha = store.put_bytes(data)
        files[path] = {"sha256": sha, "verity": fsverity_digest_bytes(data)}
        entries.append(Entry(path, FILE, 0o644, 0, 0, size, MTIME, sha))
    return Module(entries, files, sum(sizes), ndirs)


@dataclass(frozen=True)
class Published:
    digest: str
    layer_digest: str
    layer_bytes: int
    public_key: str


def publish(module: Module, store: ContentStore, work: Path, registry: Registry) -> Published:
    """Build, sign (tag flavour and referrer) and push the module; the layout is then removed."""
    layout_dir = work / "layout"
    with build_module_artifact(
        name=NAME,
        version=VERSION,
        spec={"description": "activation benchmark", "packages": []},
        entries=module.entries,
        open_blob=store.open,
        created=CREATED,
        workdir=work,
    ) as artifact:
        desc = artifact.write_layout(layout_dir, tag=VERSION)
        layer = artifact.layer_descriptor
    signer = KeySigner(ec.generate_private_key(ec.SECP256R1()))
    layout = OciLayout.open(layout_dir)
    bundle = sign_manifest(desc.digest, REPO, signer, now=dt.datetime.now(dt.UTC))
    for sig, tag in (
        (bundle.tag_artifact(), signature_tag(desc.digest)),
        (bundle.referrer_artifact(layout.resolve(desc.digest)), None),
    ):
        for blob in sig.blobs.values():
            layout.put_blob_bytes(blob)
        layout.add_manifest(sig.manifest, media.OCI_MANIFEST, tag=tag)
    push_layout(layout_dir, registry.ref(REPO, VERSION), insecure=True)
    push_layout(
        layout_dir, registry.ref(REPO, signature_tag(desc.digest)), insecure=True, referrers=False
    )
    shutil.rmtree(layout_dir)
    return Published(desc.digest, layer.digest, layer.size, public_key_pem(signer.public_key))


def count_files(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def release(state: Path) -> None:
    """Unmount whatever the activation mounted under the state directory."""
    Generations(state).release()
    generations = state / "modules" / "generations"
    if generations.is_dir():
        for generation in generations.iterdir():
            for mount_point in [generation / "root", *lower_mounts(generation)]:
                if os.path.ismount(mount_point):
                    with contextlib.suppress(MountError):
                        unmount(mount_point)
                    if os.path.ismount(mount_point):
                        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def run_ours(
    run_dir: Path, registry: Registry, published: Published, module: Module, *, erofs: bool = True
) -> tuple[float, ApplyResult]:
    state = run_dir / "state"
    state.mkdir(mode=0o700)
    payload = {
        "modules": [
            {
                "name": NAME,
                "version": VERSION,
                "reference": registry.ref(REPO, VERSION),
                "digest": published.digest,
                "policy": {"identities": [], "public_keys": [published.public_key]},
                "files": module.files,
            }
        ],
        "insecure": True,
    }
    options = ApplyOptions(activation=ActivationOptions(overlay=True, erofs=erofs))
    started = time.perf_counter()
    request = parse_request(payload)
    result = asyncio.run(apply_modules(state, request, options))
    elapsed = time.perf_counter() - started
    found = count_files(state / "modules" / "current" / "root")
    if result.active != {NAME: published.digest} or found != len(module.files):
        raise SystemExit(f"ours: activated {result.active} with {found} files")
    return elapsed, result


def run_peer(run_dir: Path, registry: Registry, published: Published, module: Module) -> float:
    oci, out = run_dir / "oci", run_dir / "out"
    out.mkdir()
    source = f"docker://{registry.host}/{REPO}:{VERSION}"
    started = time.perf_counter()
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            source,
            f"oci:{oci}:{VERSION}",
        ],
        check=True,
    )
    blob = oci / "blobs" / "sha256" / published.layer_digest.removeprefix("sha256:")
    subprocess.run(["tar", "--zstd", "-xf", str(blob), "-C", str(out)], check=True)
    elapsed = time.perf_counter() - started
    found = count_files(out)
    if found != len(module.files):
        raise SystemExit(f"peer: tar extracted {found} files, not {len(module.files)}")
    return elapsed


def clear(work: Path) -> None:
    """Remove every run directory (unmounting what the activation mounted first), then sync."""
    for old in work.glob("run-*"):
        if (old / "state").exists():
            release(old / "state")
        shutil.rmtree(old)
    os.sync()


def fresh(work: Path, name: str) -> Path:
    """An empty run directory, after the previous runs' trees are gone and flushed."""
    clear(work)
    path = work / name
    path.mkdir()
    return path


def summary(times: list[float], layer_bytes: int, file_bytes: int) -> dict[str, Any]:
    median = statistics.median(times)
    return {
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "layer_mb_s": round(layer_bytes / median / 1e6, 1),
        "files_mb_s": round(file_bytes / median / 1e6, 1),
    }


def run(files: int, size_mib: int, repeats: int, seed: int, lowers: list[str]) -> dict[str, Any]:
    for tool in ("skopeo", "tar", "zstd", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (make setup)")
    with tempfile.TemporaryDirectory(prefix="bench-activation-") as tmp:
        work = Path(tmp)
        (work / "registry").mkdir()
        registry = start_registry(work / "registry")
        try:
            return _measure(work, registry, files, size_mib, repeats, seed, lowers)
        finally:
            try:
                clear(work)
            finally:
                stop(registry)


def _measure(
    work: Path,
    registry: Registry,
    files: int,
    size_mib: int,
    repeats: int,
    seed: int,
    lowers: list[str],
) -> dict[str, Any]:
    started = time.perf_counter()
    store = ContentStore(work / "content")
    module = make_module(store, files, size_mib << 20, seed)
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    published = publish(module, store, work, registry)
    publish_s = time.perf_counter() - started
    shutil.rmtree(store.root)
    ours: dict[str, list[float]] = {mode: [] for mode in lowers}
    peer: list[float] = []
    results: dict[str, list[ApplyResult]] = {mode: [] for mode in lowers}
    load_before = round(os.getloadavg()[0], 2)

    def do_ours(mode: str, n: int) -> None:
        run_dir = fresh(work, f"run-ours-{mode}-{n}")
        elapsed, result = run_ours(run_dir, registry, published, module, erofs=mode == EROFS)
        ours[mode].append(elapsed)
        results[mode].append(result)

    def do_peer(n: int) -> None:
        peer.append(run_peer(fresh(work, f"run-peer-{n}"), registry, published, module))

    steps: list[Callable[[int], None]] = [functools.partial(do_ours, mode) for mode in lowers]
    steps.append(do_peer)
    for n in range(repeats):
        for step in steps if n % 2 == 0 else reversed(steps):
            step(n)
    clear(work)
    main = lowers[0]
    ratios = {mode: statistics.median(peer) / statistics.median(ours[mode]) for mode in lowers}
    others = {
        f"ours_{mode}_lowers": summary(ours[mode], published.layer_bytes, module.file_bytes)
        | {
            "ratio": round(ratios[mode], 3),
            "activation_lowers": "/".join(sorted({str(r.lowers) for r in results[mode]})),
        }
        for mode in lowers[1:]
    }
    return {
        "benchmark": "pull + verify + activate vs skopeo copy + tar -x",
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine_info() | {"loadavg_1m_before_runs": load_before},
        "parameters": {
            "files": files,
            "dirs": module.dirs,
            "size_mib": size_mib,
            "file_bytes": module.file_bytes,
            "layer_bytes": published.layer_bytes,
            "layer_to_files": round(published.layer_bytes / module.file_bytes, 3),
            "data": "per file: half random.randbytes, half random bytes on 16 symbols",
            "repeats": repeats,
            "seed": seed,
        },
        "setup_s": {"generate": round(generate_s, 1), "build_sign_push": round(publish_s, 1)},
        "ours": summary(ours[main], published.layer_bytes, module.file_bytes),
        "peer": summary(peer, published.layer_bytes, module.file_bytes),
        "ratio": round(ratios[main], 3),
        "target": f"ratio >= {RATIO_TARGET}",
        "met": ratios[main] >= RATIO_TARGET,
        "activation_mode": "/".join(sorted({str(r.mode) for r in results[main]})),
        "activation_lowers": "/".join(sorted({str(r.lowers) for r in results[main]})),
        **others,
        "fs_verity": "/".join(sorted({str(r.verity) for r in results[main]})),
        "fs_verity_enabled": all(r.verity == ENABLED for r in results[main]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lowers",
        choices=[EROFS, DIRECTORIES, BOTH],
        default=BOTH,
        help="the overlay's lower layers for ours: EROFS images where possible (the agent's "
        "default), the tree directories, or both in the same run (the default; the ratio and "
        "`met` are EROFS's)",
    )
    args = parser.parse_args()
    if args.files < 1 or args.size_mib < 1 or args.repeats < 1:
        parser.error("--files, --size-mib and --repeats must be positive")
    lowers = [EROFS, DIRECTORIES] if args.lowers == BOTH else [args.lowers]
    result = run(args.files, args.size_mib, args.repeats, args.seed, lowers)
    print(json.dumps(result, indent=2))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
