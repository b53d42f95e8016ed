"""EROFS lower layers: each module tree as a reproducible, read-only loop-mounted image under
the overlay, falling back to the trees themselves, and unmounted with its generation.

Everything runs for real (mkfs.erofs, loop devices, overlayfs); where this machine cannot mount
EROFS images the same tests check the fallback instead. The `state` fixture unmounts whatever
a test left mounted under its directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from powernode.agent.modules.activate import ActivationOptions, ensure_mounted
from powernode.agent.modules.errors import PostCheckFailed
from powernode.agent.modules.generations import (
    DIRECTORIES,
    EROFS,
    MATERIALIZED,
    OVERLAY,
    Generation,
    Generations,
)
from powernode.agent.modules.mounts import is_mounted, unmount
from powernode.artifacts.signing import KeySigner
from powernode.modules.store import ContentStore
from tests.agent.modules.factories import (
    Published,
    apply,
    module_doc,
    policy_for,
    publish,
    snapshot,
)


def two_modules(store: ContentStore, tmp_path: Path, signer: KeySigner) -> list[Published]:
    base = publish(
        store,
        tmp_path / "base-oci",
        signer,
        name="base",
        files={"etc/motd": b"base\n", "usr/bin/tool": b"#!/bin/sh\n", "usr/lib/a": b"a\n" * 5000},
        modes={"usr/bin/tool": 0o755},
        symlinks={"usr/bin/t": "tool"},
        dirs={"var/empty": 0o700},
    )
    web = publish(
        store,
        tmp_path / "web-oci",
        signer,
        name="web",
        files={"etc/motd": b"web\n", "srv/www/index.html": b"<h1>hello</h1>\n"},
    )
    return [base, web]


def fstype(mount_point: Path) -> str | None:
    """The filesystem type mounted at `mount_point`, from /proc/self/mountinfo."""
    target = os.path.realpath(mount_point)
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == target:
                return fields[fields.index("-") + 1]
    return None


def loop_backing_files() -> set[str]:
    """The files every attached loop device reads (from sysfs)."""
    found = set()
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            found.add(backing.read_text().strip().removesuffix(" (deleted)"))
        except OSError:
            continue
    return found


def with_times(path: Path) -> dict[str, tuple[Any, ...]]:
    """`snapshot` plus every path's mtime (the root's too)."""
    found = {rel: (*e, os.lstat(path / rel).st_mtime_ns) for rel, e in snapshot(path).items()}
    found["."] = (stat.S_IMODE(os.lstat(path).st_mode), os.lstat(path).st_mtime_ns)
    return found


async def test_the_overlay_lowers_are_erofs_images_of_the_trees_and_the_record_says_so(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, erofs_works: bool
) -> None:
    """Each tree is an image mounted read-only as erofs; the union is the same as with
    directories; the generation record and the task result name the lowers used."""
    policy = policy_for(publisher)
    docs = [module_doc(p, policy) for p in two_modules(store, tmp_path, publisher)]

    result = await apply(state, docs)

    generation = Generations(state).current()
    assert generation is not None
    record = json.loads((generation.path / "generation.json").read_bytes())
    if not erofs_works:
        assert (result.lowers, record["lowers"]) == (generation.lowers, generation.lowers)
        assert result.lowers != EROFS
        return
    assert (result.mode, result.lowers) == (OVERLAY, EROFS)
    assert (record["mode"], record["lowers"], record["erofs_error"]) == (OVERLAY, EROFS, None)
    assert result.document()["lowers"] == EROFS
    for module, image, mount_point in generation.images:
        assert fstype(mount_point) == "erofs"
        assert with_times(mount_point) == with_times(generation.path / module.tree)
        assert str(image) in loop_backing_files()
        assert stat.S_IMODE(image.stat().st_mode) == 0o444
    assert fstype(generation.root) == "overlay"
    root = generation.root
    assert (root / "etc/motd").read_bytes() == b"web\n"
    assert (root / "usr/lib/a").read_bytes() == b"a\n" * 5000
    assert os.readlink(root / "usr/bin/t") == "tool"
    assert stat.S_IMODE((root / "var/empty").stat().st_mode) == 0o700
    with pytest.raises(OSError, match="Read-only file system") as caught:
        (root / "etc/motd").write_bytes(b"changed\n")
    assert caught.value.errno == errno.EROFS


async def test_the_same_module_makes_the_same_image_byte_for_byte(
    store: ContentStore, publisher: KeySigner, tmp_path: Path, erofs_works: bool
) -> None:
    """Two nodes (two state directories) build identical images from one module version."""
    if not erofs_works:
        pytest.skip("this machine cannot mount EROFS images")  # the fallback is tested below
    web = publish(store, tmp_path / "web-oci", publisher, name="web", files={"a/b/c": b"c\n"})
    images = []
    for node in ("node-a", "node-b"):
        node_state = tmp_path / node
        node_state.mkdir(mode=0o700)
        try:
            await apply(node_state, [module_doc(web, policy_for(publisher))])
            generation = Generations(node_state).current()
            assert generation is not None
            [(_, image, _)] = generation.images
            images.append(hashlib.sha256(image.read_bytes()).hexdigest())
        finally:
            Generations(node_state).release()

    assert images[0] == images[1]


@pytest.mark.parametrize(
    ("options", "cause"),
    [
        (ActivationOptions(erofs=False), "EROFS lowers are disabled on this node"),
        (ActivationOptions(mkfs_erofs="/nonexistent/mkfs.erofs"), "is not installed"),
    ],
    ids=["disabled", "no mkfs.erofs"],
)
async def test_without_erofs_the_lowers_are_the_tree_directories(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    overlay_works: bool,
    options: ActivationOptions,
    cause: str,
) -> None:
    """Disabled or without the tool: an overlay of the trees, the reason recorded."""
    policy = policy_for(publisher)
    docs = [module_doc(p, policy) for p in two_modules(store, tmp_path, publisher)]

    result = await apply(state, docs, activation=options)

    generation = Generations(state).current()
    assert generation is not None
    assert (state / "modules/current/root/etc/motd").read_bytes() == b"web\n"
    assert not (generation.path / "lowers").exists()
    if overlay_works:
        assert (result.mode, result.lowers) == (OVERLAY, DIRECTORIES)
        assert generation.erofs_error is not None
        assert cause in generation.erofs_error
        assert generation.lower_dirs == generation.trees
    else:
        assert (result.mode, result.lowers) == (MATERIALIZED, None)


async def test_an_image_the_kernel_refuses_falls_back_to_directories_with_nothing_mounted(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, overlay_works: bool
) -> None:
    """A "mkfs.erofs" that writes garbage: the mount fails, nothing stays mounted, the trees
    are the lowers and the mount's complaint is recorded."""
    if not overlay_works:
        pytest.skip("this machine cannot mount overlays")
    fake = tmp_path / "bin" / "mkfs.erofs"
    fake.parent.mkdir()
    # mkfs.erofs --quiet -x-1 -U<uuid> IMAGE TREE: write IMAGE, 1 MiB of zeros.
    fake.write_text('#!/bin/sh\nhead -c 1048576 /dev/zero > "$4"\n')
    fake.chmod(0o755)
    policy = policy_for(publisher)
    docs = [module_doc(p, policy) for p in two_modules(store, tmp_path, publisher)]

    result = await apply(state, docs, activation=ActivationOptions(mkfs_erofs=str(fake)))

    generation = Generations(state).current()
    assert generation is not None
    assert (result.mode, result.lowers) == (OVERLAY, DIRECTORIES)
    assert generation.erofs_error is not None
    assert "mount failed" in generation.erofs_error
    assert [m for _, _, m in generation.images if is_mounted(m)] == []
    assert not {str(image) for _, image, _ in generation.images} & loop_backing_files()
    assert (state / "modules/current/root/etc/motd").read_bytes() == b"web\n"


async def test_pruned_and_rolled_back_generations_unmount_their_images(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, erofs_works: bool
) -> None:
    """Pruning generation 1 and rolling back generation 4 unmount their images (the loop
    devices go with them) before the directories are deleted."""
    policy = policy_for(publisher)
    seen: list[Generation] = []
    for version in ("1.0", "2.0", "3.0"):
        web = publish(store, tmp_path / version, publisher, name="web", version=version)
        await apply(state, [module_doc(web, policy)])
        current = Generations(state).current()
        assert current is not None
        seen.append(current)
    fourth = publish(store, tmp_path / "4.0", publisher, name="web", version="4.0")

    async def refuse(generation: Generation, root: Path) -> None:
        seen.append(generation)
        raise PostCheckFailed(None, "refused")

    with pytest.raises(PostCheckFailed):
        await apply(state, [module_doc(fourth, policy)], check=refuse)

    first, second, third, abandoned = seen
    assert Generations(state).numbers() == [2, 3]
    assert os.readlink(state / "modules/current") == "generations/3"
    attached = loop_backing_files()
    for gone in (first, abandoned):
        assert not gone.path.exists()
        assert not {str(image) for _, image, _ in gone.images} & attached
    for kept in (second, third):
        mounted = [is_mounted(m) for _, _, m in kept.images]
        assert mounted == [erofs_works]
    assert (state / "modules/current/root/etc/web.conf").read_bytes() == b"web 3.0\n"


async def test_after_a_reboot_the_images_and_the_root_are_mounted_again(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, erofs_works: bool
) -> None:
    """With nothing mounted (as after a reboot), the current generation's images and overlay
    are mounted again from the images kept, not rebuilt."""
    if not erofs_works:
        pytest.skip("this machine cannot mount EROFS images")
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    await apply(state, [module_doc(web, policy_for(publisher))])
    generations = Generations(state)
    generation = generations.current()
    assert generation is not None
    [(_, image, mount_point)] = generation.images
    built = image.stat().st_mtime_ns
    unmount(generation.root)
    unmount(mount_point)

    with generations.lock():
        ensure_mounted(generations, ActivationOptions())

    assert fstype(mount_point) == "erofs"
    assert fstype(generation.root) == "overlay"
    assert image.stat().st_mtime_ns == built
    assert (generations.active_root / "etc/web.conf").read_bytes() == b"web 1.0\n"
    current = generations.current()
    assert current is not None
    assert current.lowers == EROFS


async def test_a_materialized_root_has_no_lowers(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """Without overlay mounts there are no images either."""
    web = publish(store, tmp_path / "web-oci", publisher, name="web")

    result = await apply(state, [module_doc(web, policy_for(publisher))], overlay=False)

    generation = Generations(state).current()
    assert generation is not None
    assert (result.mode, result.lowers, generation.erofs_error) == (MATERIALIZED, None, None)
    assert not (generation.path / "images").exists()
