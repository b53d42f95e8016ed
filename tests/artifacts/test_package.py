"""Building module artifacts: reproducible bytes, the manifest's shape, the tree in the layer."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from powernode.artifacts import media
from powernode.artifacts.layer import read_module_layer
from powernode.artifacts.oci import sha256_digest
from powernode.artifacts.package import (
    build_module_artifact,
    created_annotation,
    parse_module_manifest,
    version_tag,
)
from powernode.errors import Invalid
from powernode.modules.entries import FILE, Entry
from powernode.modules.store import ContentStore
from tests.artifacts.factories import CREATED, DEFAULT_FILES, LONG_NAME, build, module_entries

ROOT = Path(__file__).resolve().parents[2]


def _build_elsewhere(workdir: Path, tz: str, umask: str) -> list[str]:
    """Build the default artifact in another process, directory, time zone and umask."""
    workdir.mkdir()
    env = {**os.environ, "TMPDIR": str(workdir), "TZ": tz, "LC_ALL": "C"}
    script = f"import os; os.umask({umask}); import runpy, sys; sys.argv = ['f', {str(workdir)!r}]"
    script += "; runpy.run_module('tests.artifacts.factories', run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_same_inputs_give_the_same_digests_in_other_processes(
    tmp_path: Path, store: ContentStore
) -> None:
    """Two processes with other directories, time zones and umasks build identical bytes."""
    with build(store, workdir=tmp_path) as artifact:
        here = [artifact.manifest_descriptor.digest, artifact.layer_descriptor.digest]
    first = _build_elsewhere(tmp_path / "one", "Asia/Tokyo", "0o077")
    second = _build_elsewhere(tmp_path / "two", "America/Lima", "0o022")
    assert first == second == here


def test_manifest_is_canonical_json_with_the_module_annotations(store: ContentStore) -> None:
    """The manifest names its module, version and creation time; JSON keys sorted, no spaces."""
    with build(store, name="web", version="1.2.0+local") as artifact:
        doc = json.loads(artifact.manifest)
        assert json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() == artifact.manifest
        assert doc["schemaVersion"] == 2
        assert doc["mediaType"] == media.OCI_MANIFEST
        assert doc["artifactType"] == media.MODULE_ARTIFACT_TYPE
        assert doc["config"] == artifact.config_descriptor.document()
        assert doc["config"]["mediaType"] == media.MODULE_ARTIFACT_TYPE
        assert doc["layers"] == [artifact.layer_descriptor.document()]
        assert doc["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
        assert doc["annotations"] == {
            "org.opencontainers.image.title": "web",
            "org.opencontainers.image.version": "1.2.0+local",
            "org.opencontainers.image.created": "2024-05-01T12:00:00Z",
            "dev.powernode.module.name": "web",
            "dev.powernode.module.version": "1.2.0+local",
        }
        assert artifact.manifest_descriptor.digest == sha256_digest(artifact.manifest)
        assert json.loads(artifact.config) == {
            "name": "web",
            "version": "1.2.0+local",
            "packages": [],
        }
        assert artifact.layer_descriptor.size == artifact.layer_path.stat().st_size
        parsed = parse_module_manifest(artifact.manifest)
        assert (parsed.name, parsed.version, parsed.layer) == (
            "web",
            "1.2.0+local",
            artifact.layer_descriptor,
        )
        assert version_tag(artifact.version) == "1.2.0_local"


def test_layer_holds_the_tree_in_path_order_with_its_metadata(store: ContentStore) -> None:
    """Reading the layer back gives every entry, sorted, with mode, owner, mtime and content."""
    entries = module_entries(store)
    with build(store) as artifact, artifact.layer_path.open("rb") as layer:
        members = []
        for member in read_module_layer(
            layer,
            expected_digest=artifact.layer_descriptor.digest,
            expected_size=artifact.layer_descriptor.size,
        ):
            content = member.content.read() if member.content is not None else None
            members.append((member, content))
    assert [m.path for m, _ in members] == [e.path for e in entries]
    for (member, content), entry in zip(members, entries, strict=True):
        assert (member.type, member.mode, member.uid, member.gid, member.mtime) == (
            entry.type,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.mtime,
        )
        assert member.target == entry.target
        if entry.type == FILE:
            assert content == DEFAULT_FILES[entry.path]
    assert LONG_NAME in [m.path for m, _ in members]


def test_layer_path_is_removed_on_close(store: ContentStore, tmp_path: Path) -> None:
    """The artifact owns its temporary layer file, in the work directory it was given."""
    with build(store, workdir=tmp_path) as artifact:
        assert artifact.layer_path.parent == tmp_path
        assert artifact.layer_path.exists()
    assert not artifact.layer_path.exists()


def test_content_that_does_not_match_its_entry_is_refused(
    store: ContentStore, tmp_path: Path
) -> None:
    """A blob whose bytes differ from the entry's sha256 fails the build and leaves no file."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    good = store.put_bytes(b"right\n")
    wrong = store.put_bytes(b"wrong\n")
    entries = [Entry("f", FILE, 0o644, 0, 0, 6, 1, good)]
    with pytest.raises(Invalid, match="does not match its size and sha256"):
        build_module_artifact(
            name="m",
            version="1",
            spec={},
            entries=entries,
            open_blob=lambda _sha: store.open(wrong),
            created=CREATED,
            workdir=workdir,
        )
    short = [Entry("f", FILE, 0o644, 0, 0, 60, 1, good)]
    with pytest.raises(Invalid, match="shorter than its 60 bytes"):
        build_module_artifact(
            name="m",
            version="1",
            spec={},
            entries=short,
            open_blob=store.open,
            created=CREATED,
            workdir=workdir,
        )
    assert list(workdir.iterdir()) == []


def test_unsafe_or_duplicate_paths_are_refused(store: ContentStore, tmp_path: Path) -> None:
    """Entries escaping the root or naming one path twice cannot be packaged."""
    sha = store.put_bytes(b"x")
    for entries in (
        [Entry("../x", FILE, 0o644, 0, 0, 1, 1, sha)],
        [Entry("a", FILE, 0o644, 0, 0, 1, 1, sha), Entry("a", FILE, 0o600, 0, 0, 1, 1, sha)],
    ):
        with pytest.raises(Invalid):
            build_module_artifact(
                name="m",
                version="1",
                spec={},
                entries=entries,
                open_blob=store.open,
                created=CREATED,
                workdir=tmp_path,
            )


def test_creation_time_must_be_aware_and_is_written_in_utc() -> None:
    """A naive datetime is refused; an aware one is written in UTC to the second."""
    with pytest.raises(Invalid, match="time zone"):
        created_annotation(datetime.datetime(2024, 1, 1))
    tz = datetime.timezone(datetime.timedelta(hours=2))
    aware = datetime.datetime(2024, 1, 1, 2, 0, 0, 500, tzinfo=tz)
    assert created_annotation(aware) == "2024-01-01T00:00:00Z"
