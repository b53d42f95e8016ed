"""Applying modules: generations, the overlay or materialized root, post-checks and rollback."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

import pytest

from powernode.agent.modules import fsverity
from powernode.agent.modules.activate import ActivationOptions, materialize
from powernode.agent.modules.errors import Busy, PostCheckFailed
from powernode.agent.modules.generations import MATERIALIZED, OVERLAY, Generation, Generations
from powernode.agent.modules.mounts import is_mounted, mount_overlay, unmount
from powernode.agent.modules.rollback import roll_back_current
from powernode.artifacts.signing import KeySigner
from powernode.modules.store import ContentStore
from powernode.modules.verity import fsverity_digest_bytes
from tests.agent.modules.factories import (
    Published,
    apply,
    module_doc,
    policy_for,
    publish,
    snapshot,
    state_snapshot,
)


def expected_mode(overlay: bool, overlay_works: bool) -> str:
    return OVERLAY if overlay and overlay_works else MATERIALIZED


def expected_verity(directory: Path) -> str:
    return "enabled" if fsverity.probe(directory) is None else "unsupported"


def web_and_base(store: ContentStore, tmp_path: Path, signer: KeySigner) -> list[Published]:
    base = publish(
        store,
        tmp_path / "base-oci",
        signer,
        name="base",
        files={"etc/motd": b"base\n", "etc/base.conf": b"b\n", "usr/bin/tool": b"#!/bin/sh\n"},
        modes={"usr/bin/tool": 0o755},
        symlinks={"usr/bin/t": "tool"},
    )
    web = publish(
        store,
        tmp_path / "web-oci",
        signer,
        name="web",
        files={"etc/motd": b"web\n", "srv/www/index.html": b"<h1>hello</h1>\n"},
    )
    return [base, web]


async def test_two_modules_become_the_active_root_the_last_on_top(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    overlay: bool,
    overlay_works: bool,
) -> None:
    """Both trees are in the active root; where they overlap the later module wins."""
    base, web = web_and_base(store, tmp_path, publisher)
    policy = policy_for(publisher)

    result = await apply(
        state, [module_doc(base, policy), module_doc(web, policy)], overlay=overlay
    )

    assert result.generation == 1
    assert result.active == {"base": base.digest, "web": web.digest}
    assert result.rolled_back is False
    assert result.mode == expected_mode(overlay, overlay_works)
    assert result.verity == expected_verity(tmp_path)
    root = state / "modules" / "current" / "root"
    assert result.root == str(root)
    assert (root / "etc/motd").read_bytes() == b"web\n"
    assert (root / "etc/base.conf").read_bytes() == b"b\n"
    assert (root / "srv/www/index.html").read_bytes() == b"<h1>hello</h1>\n"
    assert os.readlink(root / "usr/bin/t") == "tool"
    assert stat.S_IMODE((root / "usr/bin/tool").stat().st_mode) == 0o755
    assert os.readlink(state / "modules" / "current") == "generations/1"


async def test_an_overlay_root_is_a_read_only_mount(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, overlay_works: bool
) -> None:
    """Where overlays are permitted the root is a read-only mount, else a tree saying why."""
    base, web = web_and_base(store, tmp_path, publisher)
    policy = policy_for(publisher)

    result = await apply(state, [module_doc(base, policy), module_doc(web, policy)])

    generation = Generations(state).current()
    assert generation is not None
    if overlay_works:
        assert result.mode == OVERLAY
        assert is_mounted(generation.root)
        with pytest.raises(OSError, match="Read-only file system") as caught:
            (generation.root / "etc/motd").write_bytes(b"changed\n")
        assert caught.value.errno == errno.EROFS
    else:
        assert result.mode == MATERIALIZED
        assert generation.mount_error


def _tree(directory: Path, files: dict[str, bytes], links: dict[str, str], mode: int) -> Path:
    """A tree made of `files` and symlinks `links`, its directory `m` with `mode`."""
    for path, data in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(data)
    for path, target in links.items():
        os.symlink(target, directory / path)
    os.chmod(directory / "m", mode)
    return directory


def test_the_materialized_root_is_the_union_overlayfs_makes(
    tmp_path: Path, overlay_works: bool
) -> None:
    """Upper files hide lower directories, upper directories hide lower files and symlinks,
    directories merge and show their topmost metadata, exactly as the overlay mount does."""
    lower = _tree(
        tmp_path / "lower",
        {"x/a": b"a\n", "f": b"file\n", "d/old": b"old\n", "m/a": b"ma\n"},
        {"s": "x"},
        0o755,
    )
    upper = _tree(
        tmp_path / "upper",
        {"x": b"x is a file now\n", "f/b": b"b\n", "s/c": b"c\n", "m/b": b"mb\n"},
        {"d": "x"},
        0o750,
    )
    materialized = tmp_path / "materialized"
    materialized.mkdir()

    materialize([lower, upper], materialized)

    union = snapshot(materialized)
    assert {path: entry[0] for path, entry in union.items()} == {
        "x": snapshot(upper)["x"][0],
        "f": "dir",
        "f/b": snapshot(upper)["f/b"][0],
        "d": "-> x",
        "s": "dir",
        "s/c": snapshot(upper)["s/c"][0],
        "m": "dir",
        "m/a": snapshot(lower)["m/a"][0],
        "m/b": snapshot(upper)["m/b"][0],
    }
    assert union["m"][1] == 0o750
    if overlay_works:
        mounted = tmp_path / "mounted"
        mounted.mkdir()
        mount_overlay([upper, lower], mounted)
        try:
            assert snapshot(mounted) == union
        finally:
            unmount(mounted)


async def test_a_second_apply_makes_generation_2_and_keeps_1_and_a_third_prunes_1(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, overlay: bool
) -> None:
    """Each apply is a new generation; the current one and the one before it are kept."""
    policy = policy_for(publisher)
    digests = []
    for version in ("1.0", "2.0", "3.0"):
        web = publish(store, tmp_path / f"web-{version}", publisher, name="web", version=version)
        result = await apply(state, [module_doc(web, policy)], overlay=overlay)
        digests.append((result.generation, result.active, sorted(_generations(state))))
        assert (
            state / "modules/current/root/etc/web.conf"
        ).read_bytes() == f"web {version}\n".encode()

    assert [(g, sorted(kept)) for g, _, kept in digests] == [
        (1, ["1"]),
        (2, ["1", "2"]),
        (3, ["2", "3"]),
    ]


def _generations(state: Path) -> list[str]:
    return [p.name for p in (state / "modules" / "generations").iterdir()]


async def test_a_failing_post_check_rolls_back_to_generation_1(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, overlay: bool
) -> None:
    """The post-check sees the new root; its failure makes generation 1 active, unchanged."""
    policy = policy_for(publisher)
    first = publish(store, tmp_path / "web-1", publisher, name="web", version="1.0")
    await apply(state, [module_doc(first, policy)], overlay=overlay)
    before = state_snapshot(state)
    second = publish(store, tmp_path / "web-2", publisher, name="web", version="2.0")
    check = 'grep -q "web 2.0" "$POWERNODE_MODULES_ROOT/etc/web.conf" && exit 3'

    with pytest.raises(PostCheckFailed) as caught:
        await apply(
            state, [module_doc(second, policy)], overlay=overlay, post_check=["sh", "-c", check]
        )

    assert "exited with 3 on generation 2" in str(caught.value)
    assert state_snapshot(state) == before
    assert Generations(state).current() is not None
    assert os.readlink(state / "modules" / "current") == "generations/1"


async def test_a_passing_post_check_sees_the_new_generation(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """The check runs with the active root and the generation number in its environment."""
    web = publish(store, tmp_path / "web", publisher, name="web")
    check = (
        'test "$POWERNODE_MODULES_GENERATION" = 1 && test -f "$POWERNODE_MODULES_ROOT/etc/web.conf"'
    )

    result = await apply(
        state, [module_doc(web, policy_for(publisher))], post_check=["sh", "-c", check]
    )

    assert (result.generation, result.rolled_back) == (1, False)


async def test_a_post_check_that_hangs_is_killed_and_rolled_back(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """A check over its timeout fails; with no earlier generation nothing is active after."""
    web = publish(store, tmp_path / "web", publisher, name="web")

    with pytest.raises(PostCheckFailed, match="timed out after 1 s"):
        await apply(
            state,
            [module_doc(web, policy_for(publisher))],
            post_check=["sleep", "30"],
            post_check_timeout_s=1,
        )

    assert state_snapshot(state) == {"current": None, "generations": [], "root": {}}


async def test_a_crashing_python_post_check_rolls_back_too(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """A post-check that raises anything counts as a refusal."""
    policy = policy_for(publisher)
    await apply(state, [module_doc(publish(store, tmp_path / "a", publisher, name="web"), policy)])
    before = state_snapshot(state)

    async def broken(generation: Generation, root: Path) -> None:
        raise RuntimeError("no route to the health endpoint")

    other = publish(store, tmp_path / "b", publisher, name="web", version="2.0")
    with pytest.raises(PostCheckFailed, match="no route to the health endpoint"):
        await apply(state, [module_doc(other, policy)], check=broken)

    assert state_snapshot(state) == before


async def test_rolling_back_remounts_the_previous_overlay_after_a_reboot(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path, overlay_works: bool
) -> None:
    """An unmounted previous generation (as after a reboot) is mounted again before it is used."""
    policy = policy_for(publisher)
    for version in ("1.0", "2.0"):
        web = publish(store, tmp_path / version, publisher, name="web", version=version)
        await apply(state, [module_doc(web, policy)])
    generations = Generations(state)
    first = generations.load(1)
    assert first is not None
    unmount(first.root)

    with generations.lock():
        active = roll_back_current(generations, ActivationOptions())

    assert active is not None
    assert active.number == 1
    assert (generations.active_root / "etc/web.conf").read_bytes() == b"web 1.0\n"
    assert is_mounted(first.root) == overlay_works
    assert sorted(_generations(state)) == ["1"]


async def test_leftovers_of_a_crash_are_removed_by_the_next_apply(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """Staging directories and incomplete generations do not survive the next apply."""
    modules = state / "modules"
    (modules / "staging" / "0123abcd").mkdir(parents=True)
    (modules / "staging" / "0123abcd" / "partial.blob").write_bytes(b"x")
    (modules / "generations" / "7" / "trees").mkdir(parents=True)
    web = publish(store, tmp_path / "web", publisher, name="web")

    result = await apply(state, [module_doc(web, policy_for(publisher))])

    assert result.generation == 1
    assert _generations(state) == ["1"]
    assert list((modules / "staging").iterdir()) == []


async def test_a_second_apply_while_one_runs_is_refused(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """The modules directory is locked for the length of an apply."""
    web = publish(store, tmp_path / "web", publisher, name="web")
    with Generations(state).lock(), pytest.raises(Busy, match="another apply_modules"):
        await apply(state, [module_doc(web, policy_for(publisher))])


async def test_files_listed_by_the_control_plane_are_checked_and_accepted(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """A `files` map with every file's sha256 and fs-verity digest is accepted when it matches."""
    import hashlib

    files = {"etc/a": b"alpha\n", "etc/b": b"beta\n" * 2000}
    web = publish(store, tmp_path / "web", publisher, name="web", files=files)
    expected = {
        path: {"sha256": hashlib.sha256(data).hexdigest(), "verity": fsverity_digest_bytes(data)}
        for path, data in files.items()
    }

    result = await apply(state, [module_doc(web, policy_for(publisher), files=expected)])

    assert result.active == {"web": web.digest}


async def test_an_apply_abandoned_during_its_post_check_rolls_back(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """Cancelling the task (the agent stopping) never leaves an unchecked generation active."""
    policy = policy_for(publisher)
    await apply(state, [module_doc(publish(store, tmp_path / "a", publisher, name="web"), policy)])
    before = state_snapshot(state)
    other = publish(store, tmp_path / "b", publisher, name="web", version="2.0")
    checking = asyncio.Event()

    async def endless(generation: Generation, root: Path) -> None:
        checking.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(apply(state, [module_doc(other, policy)], check=endless))
    await checking.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert state_snapshot(state) == before
