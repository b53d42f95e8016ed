"""The build pipeline's tree and initramfs stages, on a synthetic base system (the rootfs stage
itself, mmdebstrap, runs in the end-to-end test): contents, usr-merge, module pruning,
caching, resumption, reproducibility, refusals."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from powernode.errors import Conflict, Invalid
from powernode.images.build import BuildRequest, PackageWant, build_images
from powernode.images.rootfs import rootfs_spec
from powernode.images.spec import Format, arch_info
from powernode.modules.entries import DIR, FILE, SYMLINK, Entry
from powernode.modules.store import ContentStore
from tests.images.fakeroot import KVER, install_fake_rootfs

EPOCH = 1_700_000_000
WHEELS = Path(
    os.environ.get("POWERNODE_TEST_IMAGE_CACHE")
    or Path.home() / ".cache" / "powernode-tests" / "images"
)
"""Shared across tests and runs: the agent's wheels are downloaded from PyPI once."""


def _entries(store: ContentStore, files: dict[str, bytes]) -> list[Entry]:
    entries: list[Entry] = []
    dirs: set[str] = set()
    for path, data in sorted(files.items()):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            dirs.add("/".join(parts[:depth]))
        sha = store.put_bytes(data)
        entries.append(Entry(path, FILE, 0o644, 0, 0, len(data), EPOCH + 500, sha, None, None))
    entries += [Entry(d, DIR, 0o755, 0, 0, 0, EPOCH, None, None, None) for d in sorted(dirs)]
    entries.append(Entry("etc/motd.link", SYMLINK, 0o777, 0, 0, 0, EPOCH, None, None, "motd"))
    return sorted(entries, key=lambda e: e.path)


def _request(
    tmp: Path,
    files: dict[str, bytes],
    *,
    cache: Path | None = None,
    packages: list[PackageWant] | None = None,
) -> BuildRequest:
    store = ContentStore(tmp / "store")
    return BuildRequest(
        template="web",
        template_version=3,
        modules=[{"name": "base", "version": "1.0.0"}],
        arch=arch_info("amd64"),
        formats=(Format.INITRAMFS,),
        entries=_entries(store, files),
        store=store,
        packages=packages or [],
        cache_dir=cache or tmp / "cache",
        out_dir=tmp / "out",
        epoch=EPOCH,
        wheel_cache=WHEELS,
    )


def _install_rootfs(request: BuildRequest) -> None:
    spec = rootfs_spec(
        request.arch,
        suite=request.suite,
        mirrors=request.mirrors,
        extra_packages=[p.name for p in request.packages],
        source_date_epoch=request.epoch,
    )
    install_fake_rootfs(request.cache_dir, spec)


def _cpio_names(initramfs: Path) -> list[str]:
    raw = subprocess.run(["zstd", "-dc", str(initramfs)], capture_output=True, check=True).stdout
    listing = subprocess.run(
        ["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True
    ).stdout
    return listing.decode().splitlines()


FILES = {"etc/motd": b"hello\n", "sbin/pn-tool": b"#!/bin/sh\necho tool\n"}


def test_initramfs_holds_the_node_and_leaves_out_boot_and_unneeded_modules(tmp_path: Path) -> None:
    request = _request(tmp_path, FILES)
    _install_rootfs(request)
    messages: list[str] = []
    result = build_images(request, messages.append)
    (artifact,) = result.artifacts
    assert [f.name for f in artifact.files] == ["vmlinuz", "initramfs.img"]
    assert artifact.details["cmdline"] == "console=ttyS0 panic=10 quiet"
    names = _cpio_names(artifact.files[1].path)
    assert names == sorted(names) or names.index("etc") < names.index("etc/motd")
    assert "init" in names
    assert "usr/sbin/powernode-init" in names
    assert "usr/lib/python3/dist-packages/powernode/agent/main.py" in names
    assert "usr/lib/python3/dist-packages/powernode/agent/boot.py" in names
    assert "usr/lib/powernode/python/cryptography/__init__.py" in names  # vendored, pinned
    assert "usr/lib/powernode/python/httpx/__init__.py" in names
    assert "etc/motd" in names
    assert "etc/motd.link" in names
    assert "usr/sbin/pn-tool" in names
    assert "sbin/pn-tool" not in names
    assert not [n for n in names if n.startswith("boot/")]
    kernel = f"usr/lib/modules/{KVER}/kernel/"
    kept = {n.removeprefix(kernel) for n in names if n.startswith(kernel) and n.endswith(".ko")}
    assert kept == {
        "drivers/net/virtio_net.ko",
        "drivers/net/net_failover.ko",
        "net/core/failover.ko",
        "fs/overlayfs/overlay.ko",
        "drivers/block/virtio_blk.ko",
        "fs/ext4/ext4.ko",
        "fs/jbd2/jbd2.ko",
    }
    assert "usr/bin/hardlinked" in names
    image = json.loads((tmp_path / "out" / "build.json").read_text())
    assert image["artifacts"][0]["format"] == "initramfs"
    assert (tmp_path / "out" / "initramfs" / "initramfs.img").exists()


def test_files_in_the_tree_carry_clamped_mtimes_and_numeric_owners(tmp_path: Path) -> None:
    request = _request(tmp_path, FILES)
    _install_rootfs(request)
    result = build_images(request, lambda _: None)
    tree = tmp_path / "cache" / "tree" / result.inputs_digest.removeprefix("sha256:") / "tree.tar"
    with tarfile.open(tree) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert max(m.mtime for m in members) <= EPOCH
    assert {m.uname for m in members} == {""}
    hostname = next(m for m in members if m.name == "etc/hostname")
    assert hostname.size == len(b"powernode\n")


def test_same_inputs_give_the_same_initramfs_in_another_process(tmp_path: Path) -> None:
    request = _request(tmp_path, FILES)
    _install_rootfs(request)
    first = build_images(request, lambda _: None).artifacts[0].files[1].sha256
    other = tmp_path / "other"
    other.mkdir()
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[2])!r})
from pathlib import Path
from tests.images.test_build import _request, _install_rootfs, FILES
from powernode.images.build import build_images
request = _request(Path({str(other)!r}), FILES)
_install_rootfs(request)
print(build_images(request, lambda _: None).artifacts[0].files[1].sha256)
"""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    second = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert first == second


def test_changing_one_module_file_rebuilds_tree_and_initramfs_only(tmp_path: Path) -> None:
    request = _request(tmp_path, FILES)
    _install_rootfs(request)
    first = build_images(request, lambda _: None)
    rootfs_dirs = list((tmp_path / "cache" / "rootfs").iterdir())
    changed = _request(tmp_path, {**FILES, "etc/motd": b"changed\n"})
    messages: list[str] = []
    second = build_images(changed, messages.append)
    assert "rootfs: cached" in messages
    assert "tree: cached" not in messages
    assert second.inputs_digest != first.inputs_digest
    assert second.artifacts[0].files[1].sha256 != first.artifacts[0].files[1].sha256
    assert list((tmp_path / "cache" / "rootfs").iterdir()) == rootfs_dirs
    again: list[str] = []
    build_images(changed, again.append)
    assert again[:3] == ["rootfs: cached", "tree: cached", "initramfs: cached"]


def test_an_interrupted_stage_is_redone_from_scratch(tmp_path: Path) -> None:
    request = _request(tmp_path, FILES)
    _install_rootfs(request)
    result = build_images(request, lambda _: None)
    key = result.inputs_digest.removeprefix("sha256:")
    stage = next((tmp_path / "cache" / "formats" / key).iterdir())
    partial = stage.with_name(stage.name + ".partial")
    stage.rename(partial)  # as if the build died before the stage's rename
    (partial / "done.json").unlink()
    again = build_images(request, lambda _: None)
    assert again.artifacts[0].files[1].sha256 == result.artifacts[0].files[1].sha256
    assert not partial.exists()


def test_a_module_file_replacing_a_base_directory_is_refused(tmp_path: Path) -> None:
    request = _request(tmp_path, {"usr/lib/modules": b"oops"})
    _install_rootfs(request)
    with pytest.raises(Conflict, match="usr/lib/modules would replace a directory"):
        build_images(request, lambda _: None)
    assert not list((tmp_path / "cache" / "tree").glob("*[!l]"))  # only .partial leftovers


def test_a_module_path_through_a_base_symlink_is_refused(tmp_path: Path) -> None:
    request = _request(tmp_path, {"usr/bin/python3/evil": b"x"})
    _install_rootfs(request)
    with pytest.raises(Conflict, match="usr/bin/python3 would replace the base system's symlink"):
        build_images(request, lambda _: None)
    no_dir = _request(tmp_path / "b", {"usr/bin/python3/evil": b"x"})
    no_dir.entries = [e for e in no_dir.entries if e.path != "usr/bin/python3"]
    _install_rootfs(no_dir)
    with pytest.raises(Conflict, match="usr/bin/python3/evil lies under usr/bin/python3"):
        build_images(no_dir, lambda _: None)


def test_package_constraints_are_checked_against_what_was_installed(tmp_path: Path) -> None:
    wants = [PackageWant("jq", ((">=", "1.7", "tools@1.0.0"),))]
    request = _request(tmp_path, FILES, packages=wants)
    _install_rootfs(request)
    with pytest.raises(Conflict, match=r"jq 1.6-2.1 does not satisfy >= 1.7 \(tools@1.0.0\)"):
        build_images(request, lambda _: None)


def test_a_bad_source_date_epoch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from powernode.images.build import source_date_epoch

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(Invalid, match="SOURCE_DATE_EPOCH='yesterday'"):
        source_date_epoch()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert source_date_epoch() == 1234


def test_the_payload_holds_everything_the_agent_imports() -> None:
    """The agent's import closure, in a fresh interpreter, is inside the copied files."""
    from powernode.images.payload import agent_files

    probe = (
        "import sys, pkgutil, importlib\n"
        "import powernode.agent.main, powernode.agent.boot\n"
        "for pkg in ('powernode.agent.executors', 'powernode.agent.modules',"
        " 'powernode.agent.identity'):\n"
        "    p = importlib.import_module(pkg)\n"
        "    for m in pkgutil.walk_packages(p.__path__, pkg + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items()"
        " if n.startswith('powernode') and getattr(m, '__file__', None))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    import powernode

    root = Path(powernode.__file__).parent
    shipped = {relative for relative, _ in agent_files()}
    needed = {Path(f).relative_to(root).as_posix() for f in out}
    assert needed <= shipped, sorted(needed - shipped)
    digest = hashlib.sha256()
    assert digest  # keep hashlib used for readers extending this test


def test_the_disk_loader_holds_busybox_the_storage_drivers_and_its_init(tmp_path: Path) -> None:
    request = _request(tmp_path, FILES)
    _install_rootfs(request)
    result = build_images(request, lambda _: None)
    loader = tmp_path / "cache" / "tree" / result.inputs_digest.removeprefix("sha256:")
    names = _cpio_names(loader / "loader.img")
    assert {"init", "bin", "usr/bin/busybox", "dev/console"} <= set(names)
    kernel = f"usr/lib/modules/{KVER}/"
    assert {n.removeprefix(kernel) for n in names if n.startswith(kernel)} >= {
        "modules.dep",
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/fs/ext4/ext4.ko",
        "kernel/fs/jbd2/jbd2.ko",
    }
    assert f"{kernel}kernel/drivers/gpu/drm/big.ko" not in names
    raw = subprocess.run(
        ["zstd", "-dc", str(loader / "loader.img")], capture_output=True, check=True
    ).stdout
    assert b"exec switch_root /root /sbin/init" in raw


def test_the_cache_keeps_the_most_recently_used_stages(tmp_path: Path) -> None:
    from powernode.images.build import prune_cache

    for i in range(6):
        stage = tmp_path / "tree" / f"t{i}"
        stage.mkdir(parents=True)
        (stage / "done.json").write_text("{}")
        os.utime(stage / "done.json", (1_000 + i, 1_000 + i))
    (tmp_path / "tree" / "t9.partial").mkdir()  # a build in progress is never touched
    os.utime(tmp_path / "tree" / "t0" / "done.json")  # just used
    removed = prune_cache(tmp_path, keep=3)
    assert sorted(p.name for p in removed) == ["t1", "t2", "t3"]
    assert sorted(p.name for p in (tmp_path / "tree").iterdir()) == ["t0", "t4", "t5", "t9.partial"]
