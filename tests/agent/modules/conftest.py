"""Fixtures for module activation: a publisher key, a signing CA, a state directory whose
mounts are released after each test, and a real docker-registry for the session."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from powernode.agent.modules.generations import Generations
from powernode.agent.modules.mounts import (
    MountError,
    build_erofs,
    can_mount,
    mount_erofs,
    mount_overlay,
    unmount,
)
from powernode.artifacts.keyless import SigningAuthority
from powernode.artifacts.signing import KeySigner
from powernode.modules.store import ContentStore
from tests.artifacts.servers import Registry, running, start_registry


@pytest.fixture(scope="session")
def publisher() -> KeySigner:
    """The publisher the tests' trust policies pin."""
    return KeySigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def stranger() -> KeySigner:
    """A key no policy trusts."""
    return KeySigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> SigningAuthority:
    """A keyless signing CA, valid from yesterday."""
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    return SigningAuthority.load_or_create(tmp_path_factory.mktemp("signing"), b"pw", now=created)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry without authentication, over plain HTTP."""
    with running(start_registry(tmp_path_factory.mktemp("registry"))) as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path / "content")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The agent's state directory; every mount under the test's directory is released after."""
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        Generations(path).release()
        for mount_point in _mounts_under(tmp_path):
            unmount(mount_point)


def _mounts_under(directory: Path) -> list[Path]:
    prefix = os.path.realpath(directory) + "/"
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


@pytest.fixture(scope="session")
def overlay_works(tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Whether this machine lets the tests mount overlays (root, and the kernel permits it)."""
    if can_mount() is not None:
        return False
    work = tmp_path_factory.mktemp("overlay-probe")
    layers = [work / "upper", work / "lower"]
    for layer in [*layers, work / "root"]:
        layer.mkdir()
    try:
        mount_overlay(layers, work / "root")
    except MountError:
        return False
    unmount(work / "root")
    return True


@pytest.fixture(scope="session")
def erofs_works(overlay_works: bool, tmp_path_factory: pytest.TempPathFactory) -> bool:
    """Whether the tests can build EROFS images and mount them (mkfs.erofs, kernel, root)."""
    if not overlay_works:
        return False
    work = tmp_path_factory.mktemp("erofs-probe")
    (work / "tree").mkdir()
    (work / "tree" / "probe").write_bytes(b"probe\n")
    (work / "mounted").mkdir()
    try:
        build_erofs(work / "tree", work / "probe.erofs", identity="probe", epoch=0)
        mount_erofs(work / "probe.erofs", work / "mounted")
    except MountError:
        return False
    unmount(work / "mounted")
    return True


@pytest.fixture(params=["overlay", "materialized"])
def overlay(request: pytest.FixtureRequest) -> bool:
    """Whether the apply tries an overlay mount (it falls back where that is not permitted)."""
    return bool(request.param == "overlay")
