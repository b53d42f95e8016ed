"""`powernode image build`: a composed template to boot artifacts, in cached, resumable stages.

    rootfs   mmdebstrap: Debian + kernel + the agent's packages + the modules' package_spec
             (cached by package list: changing module files never reruns it)
    tree     rootfs + composed module tree + agent + init -> one deterministic tar
             (cached by rootfs, module manifest and agent)
    formats  initramfs, disk, iso, ipxe, qcow2, bootc from the tree (each cached by the tree)

A stage's directory appears (by rename) only once it is complete, so an interrupted build
resumes at the first unfinished stage. SOURCE_DATE_EPOCH (default `DEFAULT_EPOCH`) clamps every
timestamp: the same inputs give byte-identical initramfs files and OCI digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.queues
import os
import pickle
import queue
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from debian.debian_support import Version as DebianVersion

from powernode.errors import Conflict, Invalid
from powernode.images import payload, pydeps
from powernode.images.initramfs import write_initramfs
from powernode.images.loader import write_loader
from powernode.images.rootfs import BuildToolError, Rootfs, build_rootfs, rootfs_spec
from powernode.images.spec import (
    ArchInfo,
    BootInputs,
    BuiltFile,
    Format,
    FormatResult,
)
from powernode.images.tools import built_file
from powernode.images.tree import Item, Overlay, build_tree
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry, encode_entries
from powernode.modules.store import ContentStore

DEFAULT_EPOCH = 1704067200
"""2024-01-01T00:00:00Z: the timestamp of every file when SOURCE_DATE_EPOCH is not set."""
TREE_REVISION = "tree-2"
FORMAT_REVISION = "formats-1"

Progress = Callable[[str], None]


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return DEFAULT_EPOCH
    try:
        epoch = int(value)
    except ValueError:
        raise Invalid(f"SOURCE_DATE_EPOCH={value!r} is not a number of seconds") from None
    if epoch < 0:
        raise Invalid("SOURCE_DATE_EPOCH must not be negative")
    return epoch


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "powernode" / "images"


@dataclass(frozen=True)
class PackageWant:
    name: str
    constraints: tuple[tuple[str, str, str], ...] = ()
    """(op, version, module) as the modules' package_spec states them."""


@dataclass
class BuildRequest:
    template: str
    template_version: int
    modules: list[dict[str, str]]
    """[{"name", "version"}] as composed, lower to upper."""
    arch: ArchInfo
    formats: tuple[Format, ...]
    entries: list[Entry]
    store: ContentStore
    packages: list[PackageWant]
    cache_dir: Path
    out_dir: Path
    suite: str = "bookworm"
    mirrors: tuple[str, ...] = ("http://deb.debian.org/debian",)
    mmdebstrap_mode: str = "auto"
    compression: str = "zstd"
    base_url: str = "http://localhost:8080"
    epoch: int = field(default_factory=source_date_epoch)
    wheel_cache: Path | None = None
    """Where downloaded wheels are kept (default: the cache directory)."""


@dataclass
class BuildResult:
    inputs_digest: str
    kernel_version: str
    artifacts: list[FormatResult]
    timings: dict[str, float]
    out_dir: Path

    def document(self) -> dict[str, Any]:
        return {
            "inputs_digest": self.inputs_digest,
            "kernel_version": self.kernel_version,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "artifacts": [
                {
                    "format": r.format.value,
                    "digest": artifact_digest(r),
                    "size": sum(f.size for f in r.files),
                    "files": [
                        {"name": f.name, "sha256": f.sha256, "size": f.size, "path": str(f.path)}
                        for f in r.files
                    ],
                    "details": r.details,
                }
                for r in self.artifacts
            ],
        }


def artifact_digest(result: FormatResult) -> str:
    return result.digest or f"sha256:{result.files[0].sha256}"


def ram_cmdline(arch: ArchInfo) -> str:
    return f"console={arch.console} panic=10 quiet"


def _key(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _pinned_packages(wants: Sequence[PackageWant]) -> list[str]:
    """Package names for mmdebstrap; an exact `=` constraint pins the version."""
    names = []
    for want in wants:
        exact = {v for op, v, _ in want.constraints if op == "="}
        if len(exact) > 1:
            raise Conflict(f"package {want.name}: modules pin different versions {sorted(exact)}")
        names.append(f"{want.name}={exact.pop()}" if exact else want.name)
    return names


def check_constraints(wants: Sequence[PackageWant], installed: dict[str, str]) -> None:
    """Every module's version constraint holds for what mmdebstrap installed."""
    problems = []
    for want in wants:
        have = installed.get(want.name)
        if have is None:
            problems.append(f"{want.name} is not installed")
            continue
        for op, version, module in want.constraints:
            if not _holds(DebianVersion(have), op, DebianVersion(version)):
                problems.append(f"{want.name} {have} does not satisfy {op} {version} ({module})")
    if problems:
        raise Conflict("package constraints not met by the suite: " + "; ".join(problems))


def _holds(have: DebianVersion, op: str, want: DebianVersion) -> bool:
    return {
        "=": have == want,
        ">=": have >= want,
        "<=": have <= want,
        ">>": have > want,
        "<<": have < want,
    }.get(op, True)


def _module_overlay(request: BuildRequest, overlay: Overlay) -> None:
    for entry in request.entries:
        origin = "template " + request.template
        if entry.type == DIR:
            item = Item("dir", entry.mode & 0o7777, entry.uid, entry.gid, entry.mtime)
        elif entry.type == SYMLINK:
            item = Item("symlink", 0o777, entry.uid, entry.gid, entry.mtime, target=entry.target)
        elif entry.type == FILE:
            assert entry.sha256 is not None
            source = request.store.path(entry.sha256)
            if not source.exists():
                raise Invalid(f"{entry.path}: content {entry.sha256} is missing from the store")
            item = Item(
                "file", entry.mode & 0o7777, entry.uid, entry.gid, entry.mtime, source=source
            )
        else:
            raise Invalid(f"{entry.path}: unknown entry type {entry.type}")
        overlay.add(entry.path, item, origin)


def _guest_python(rootfs: Rootfs) -> tuple[int, int] | None:
    version = rootfs.installed.get("python3", "")
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


KEEP_STAGES = 4
"""Stage directories of each kind kept in the cache, most recently used first."""


def prune_cache(cache_dir: Path, keep: int = KEEP_STAGES) -> list[Path]:
    """Remove all but the `keep` most recently used rootfs, tree and format-set directories
    (a stage's use touches its marker file); returns what was removed."""
    removed: list[Path] = []
    for kind, marker in (("rootfs", "info.json"), ("tree", "done.json"), ("formats", None)):
        root = cache_dir / kind
        if not root.is_dir():
            continue
        stages = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")]

        def used(path: Path, marker: str | None = marker) -> float:
            target = path / marker if marker else path
            return target.stat().st_mtime if target.exists() else 0.0

        for stale in sorted(stages, key=used, reverse=True)[keep:]:
            shutil.rmtree(stale, ignore_errors=True)
            removed.append(stale)
    return removed


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _stage(directory: Path) -> tuple[Path, bool]:
    """(the stage directory, whether it is complete); a partial one is cleared."""
    if (directory / "done.json").exists():
        _touch(directory / "done.json")
        _touch(directory.parent)
        return directory, True
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial, False


def _finish(partial: Path, final: Path, doc: dict[str, Any]) -> None:
    (partial / "done.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(partial)
    else:
        partial.replace(final)


def build_images(request: BuildRequest, progress: Progress) -> BuildResult:
    timings: dict[str, float] = {}
    started = time.monotonic()
    spec = rootfs_spec(
        request.arch,
        suite=request.suite,
        mirrors=request.mirrors,
        extra_packages=_pinned_packages(request.packages),
        source_date_epoch=request.epoch,
    )
    rootfs = build_rootfs(spec, request.cache_dir, mode=request.mmdebstrap_mode, progress=progress)
    check_constraints(request.packages, rootfs.installed)
    timings["rootfs"] = time.monotonic() - started

    mark = time.monotonic()
    guest_python = _guest_python(rootfs)
    if guest_python is None:
        raise Invalid("the rootfs has no python3 package; the agent needs it")
    tree_key = _key(
        {
            "revision": TREE_REVISION,
            "rootfs": spec.key(),
            "entries": hashlib.sha256(encode_entries(request.entries)).hexdigest(),
            "payload": payload.payload_digest(),
            "wheels": pydeps.wheels_key(request.arch.name, guest_python),
            "epoch": request.epoch,
            "template": request.template,
            "modules": request.modules,
        }
    )
    tree_dir, done = _stage(request.cache_dir / "tree" / tree_key)
    if done:
        progress("tree: cached")
    else:
        progress(f"tree: composing {len(request.entries)} module entries onto the base system")
        overlay = Overlay()
        _module_overlay(request, overlay)
        payload.add_payload(
            overlay,
            epoch=request.epoch,
            guest_python=guest_python,
            work_dir=tree_dir,
            image_doc={
                "template": request.template,
                "template_version": request.template_version,
                "modules": request.modules,
                "arch": request.arch.name,
                "kernel_version": rootfs.kernel_version,
                "inputs_digest": f"sha256:{tree_key}",
            },
        )
        progress("tree: the agent's Python libraries")
        wheels = pydeps.fetch_wheels(
            request.arch.name, guest_python, request.wheel_cache or request.cache_dir
        )
        pydeps.add_wheels(overlay, wheels, epoch=request.epoch, work_dir=tree_dir)
        stats = build_tree(rootfs.tar, overlay, tree_dir / "tree.tar", epoch=request.epoch)
        shutil.rmtree(tree_dir / "pyc", ignore_errors=True)
        shutil.rmtree(tree_dir / "wheels", ignore_errors=True)
        progress("tree: writing the disk loader")
        loader = write_loader(
            tree_dir / "tree.tar",
            tree_dir / "loader.img",
            kernel_version=rootfs.kernel_version,
            modules_dep=rootfs.modules_dep,
            epoch=request.epoch,
        )
        final = request.cache_dir / "tree" / tree_key
        _finish(
            tree_dir,
            final,
            {"entries": stats.entries, "bytes": stats.bytes, "loader_bytes": loader.size},
        )
        tree_dir = final
    timings["tree"] = time.monotonic() - mark

    inputs = BootInputs(
        arch=request.arch,
        tree_tar=tree_dir / "tree.tar",
        kernel_version=rootfs.kernel_version,
        vmlinuz=rootfs.vmlinuz,
        disk_initrd=tree_dir / "loader.img",
        initramfs=Path(),  # set once the initramfs stage ran
        cmdline=ram_cmdline(request.arch),
        source_date_epoch=request.epoch,
        work_dir=Path(),
    )
    formats_root = request.cache_dir / "formats" / tree_key
    results: dict[Format, FormatResult] = {}
    needed = _with_prerequisites(request.formats)

    def run_lane(lane: Sequence[Format], lane_inputs: BootInputs, report: Progress) -> None:
        for fmt in lane:
            mark = time.monotonic()
            results[fmt] = _format_stage(
                fmt, formats_root, request, rootfs, lane_inputs, results, report
            )
            timings[fmt.value] = time.monotonic() - mark

    # The initramfs is an input of iso, ipxe and bootc, the disk of qcow2. After the initramfs
    # two lanes run side by side, each in its own process (both are mostly Python reading and
    # writing tar streams, so threads would take turns on one core): disk then qcow2, and
    # iso, ipxe, bootc.
    if Format.INITRAMFS in needed:
        run_lane((Format.INITRAMFS,), inputs, progress)
        inputs = replace(inputs, initramfs=results[Format.INITRAMFS].files[1].path)
    lanes = [
        [f for f in lane if f in needed]
        for lane in ((Format.DISK, Format.QCOW2), (Format.ISO, Format.IPXE, Format.BOOTC))
    ]
    lanes = [lane for lane in lanes if lane]
    if len(lanes) > 1:
        for fmt, seconds in _run_lanes_in_processes(lanes, inputs, run_lane, progress).items():
            results[fmt] = load_result(_format_dir(fmt, formats_root, request))
            timings[fmt.value] = seconds
    else:
        for lane in lanes:
            run_lane(lane, inputs, progress)
    _touch(formats_root)
    artifacts = [results[f] for f in request.formats]
    request.out_dir.mkdir(parents=True, exist_ok=True)
    published = [_publish(r, request.out_dir / r.format.value) for r in artifacts]
    removed = prune_cache(request.cache_dir)
    if removed:
        progress(f"cache: removed {len(removed)} stage(s) not used recently")
    timings["total"] = time.monotonic() - started
    result = BuildResult(
        inputs_digest=f"sha256:{tree_key}",
        kernel_version=rootfs.kernel_version,
        artifacts=published,
        timings=timings,
        out_dir=request.out_dir,
    )
    (request.out_dir / "build.json").write_text(
        json.dumps(
            {"template": request.template, "arch": request.arch.name, **result.document()}, indent=2
        )
        + "\n"
    )
    return result


def _run_lanes_in_processes(
    lanes: Sequence[Sequence[Format]],
    inputs: BootInputs,
    run_lane: Callable[[Sequence[Format], BootInputs, Progress], None],
    progress: Progress,
) -> dict[Format, float]:
    """Run each lane in a forked process; relay their progress; the first failure is raised
    (after the other lane finished, so no stage is left half-written by a killed process)."""
    context = multiprocessing.get_context("fork")
    messages: multiprocessing.queues.Queue[tuple[str, Any, Any]] = context.Queue()

    def child(lane: Sequence[Format]) -> None:
        try:
            for fmt in lane:
                mark = time.monotonic()
                run_lane((fmt,), inputs, lambda message: messages.put(("progress", message, None)))
                messages.put(("timing", fmt.value, time.monotonic() - mark))
            messages.put(("done", None, None))
        except BaseException as exc:
            try:
                pickle.dumps(exc)
                messages.put(("error", exc, None))
            except Exception:
                messages.put(("error", BuildToolError(f"{type(exc).__name__}: {exc}"), None))
        finally:
            messages.close()
            messages.join_thread()

    processes = [context.Process(target=child, args=(lane,), daemon=True) for lane in lanes]
    for process in processes:
        process.start()
    timings: dict[Format, float] = {}
    failure: BaseException | None = None
    pending = len(processes)
    while pending:
        try:
            kind, value, extra = messages.get(timeout=0.5)
        except queue.Empty:
            if not any(p.is_alive() for p in processes):
                failure = failure or BuildToolError("a format stage process died")
                break
            continue
        if kind == "progress":
            progress(str(value))
        elif kind == "timing":
            timings[Format(value)] = float(extra)
        elif kind == "done":
            pending -= 1
        else:
            pending -= 1
            failure = failure or value
    for process in processes:
        process.join()
    if failure is not None:
        raise failure
    return timings


def _with_prerequisites(formats: Sequence[Format]) -> list[Format]:
    wanted = set(formats)
    if wanted & {Format.ISO, Format.IPXE, Format.BOOTC}:
        wanted.add(Format.INITRAMFS)
    if Format.QCOW2 in wanted:
        wanted.add(Format.DISK)
    order = (Format.INITRAMFS, Format.DISK, Format.QCOW2, Format.ISO, Format.IPXE, Format.BOOTC)
    return [f for f in order if f in wanted]


def _format_dir(fmt: Format, formats_root: Path, request: BuildRequest) -> Path:
    params: dict[str, Any] = {"revision": FORMAT_REVISION}
    if fmt == Format.INITRAMFS:
        params["compression"] = request.compression
    if fmt == Format.IPXE:
        params["base_url"] = request.base_url
    return formats_root / f"{fmt.value}-{_key(params)[:16]}"


def _format_stage(
    fmt: Format,
    formats_root: Path,
    request: BuildRequest,
    rootfs: Rootfs,
    inputs: BootInputs,
    results: dict[Format, FormatResult],
    progress: Progress,
) -> FormatResult:
    final = _format_dir(fmt, formats_root, request)
    directory, done = _stage(final)
    if done:
        progress(f"{fmt.value}: cached")
        return load_result(final)
    progress(f"{fmt.value}: building")
    work = directory / ".work"
    work.mkdir()
    stage_inputs = replace(inputs, work_dir=work)
    result = _run_format(fmt, stage_inputs, directory, request, rootfs, results)
    shutil.rmtree(work, ignore_errors=True)
    _finish(directory, final, result_document(result, directory))
    return load_result(final)


def _run_format(
    fmt: Format,
    inputs: BootInputs,
    directory: Path,
    request: BuildRequest,
    rootfs: Rootfs,
    results: dict[Format, FormatResult],
) -> FormatResult:
    if fmt == Format.INITRAMFS:
        shutil.copyfile(rootfs.vmlinuz, directory / "vmlinuz")
        stats = write_initramfs(
            inputs.tree_tar,
            directory / "initramfs.img",
            kernel_version=rootfs.kernel_version,
            modules_dep=rootfs.modules_dep,
            compression=request.compression,
        )
        return FormatResult(
            format=fmt,
            files=(built_file(directory / "vmlinuz"), built_file(directory / "initramfs.img")),
            details={
                "cmdline": inputs.cmdline,
                "compression": request.compression,
                "entries": stats.entries,
                "uncompressed_bytes": stats.cpio_bytes,
                "kernel_modules": stats.modules_kept,
            },
        )
    from powernode.images import formats

    return formats.run(fmt, inputs, directory, request.base_url, request.cache_dir, results)


def result_document(result: FormatResult, directory: Path) -> dict[str, Any]:
    return {
        "format": result.format.value,
        "digest": result.digest,
        "details": result.details,
        "files": [
            {
                "name": f.name,
                "path": str(f.path.relative_to(directory)),
                "sha256": f.sha256,
                "size": f.size,
            }
            for f in result.files
        ],
    }


def load_result(directory: Path) -> FormatResult:
    doc = json.loads((directory / "done.json").read_text())
    return FormatResult(
        format=Format(doc["format"]),
        files=tuple(
            BuiltFile(f["name"], directory / f["path"], f["sha256"], f["size"])
            for f in doc["files"]
        ),
        details=doc["details"],
        digest=doc["digest"],
    )


def _publish(result: FormatResult, out: Path) -> FormatResult:
    """Hard-link (or copy) a cached format's files into the output directory."""
    files = []
    for f in result.files:
        target = out / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.link(f.path, target)
        except OSError:
            shutil.copyfile(f.path, target)
        files.append(BuiltFile(f.name, target, f.sha256, f.size))
    return FormatResult(result.format, tuple(files), result.details, result.digest)
