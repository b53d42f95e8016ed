"""Modules through the API: import a tar, list, show, entries, preview and manifest."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

import pytest

from powernode.cli.modules import pack
from tests.api.conftest import Api


def make_tree(root: Path, files: dict[str, str], toml: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    if toml is not None:
        (root / "module.toml").write_text(textwrap.dedent(toml))
    return root


def tar_of(root: Path) -> bytes:
    archive = root.parent / f"{root.name}.tar"
    pack(root, archive)
    return archive.read_bytes()


async def upload(api: Api, name: str, version: str, body: bytes) -> dict[str, object]:
    response = await api.call(
        "POST",
        f"/modules/{name}/versions",
        params={"version": version},
        content=body,
        headers={"content-type": "application/x-tar"},
    )
    assert response.status_code == 201, response.text
    result: dict[str, object] = response.json()
    return result


async def test_import_applies_file_spec_and_records_an_event(api: Api, tmp_path: Path) -> None:
    tree = make_tree(
        tmp_path / "nginx",
        {
            "etc/nginx/nginx.conf": "worker_processes 1;\n",
            "etc/nginx/README": "docs",
            "usr/sbin/nginx": "ELF",
        },
        toml="""
            name = "nginx"
            version = "1.24.0"
            description = "web server"
            file_spec = ["- README", "+ *"]
            package_spec = ["libc6 (>= 2.36)"]
        """,
    )
    created = await upload(api, "nginx", "1.24.0", tar_of(tree))
    assert created["file_count"] == 2
    entries = await api.ok("GET", "/modules/nginx/versions/1.24.0/entries")
    paths = [e["path"] for e in entries]
    assert paths == [
        "etc",
        "etc/nginx",
        "etc/nginx/nginx.conf",
        "usr",
        "usr/sbin",
        "usr/sbin/nginx",
    ]
    conf = entries[2]
    assert (conf["type"], conf["uid"], conf["gid"], conf["size"]) == ("file", 0, 0, 20)
    assert conf["verity"].startswith("sha256:")
    listed = await api.ok("GET", "/modules")
    assert listed["items"][0]["versions"] == ["1.24.0"]
    events = await api.ok("GET", "/events", params={"kind": "module.imported"})
    assert events["items"][0]["payload"]["files"] == 2


async def test_versions_are_immutable(api: Api, tmp_path: Path) -> None:
    body = tar_of(make_tree(tmp_path / "m", {"a": "1"}))
    await upload(api, "base", "1.0", body)
    again = await api.call(
        "POST", "/modules/base/versions", params={"version": "1.0"}, content=body
    )
    assert again.status_code == 409
    assert "immutable" in again.json()["detail"]


async def test_bad_archives_and_mismatched_metadata_are_refused(api: Api, tmp_path: Path) -> None:
    garbage = await api.call(
        "POST", "/modules/base/versions", params={"version": "1.0"}, content=b"not a tar at all"
    )
    assert garbage.status_code == 422
    assert "tar" in garbage.json()["detail"]
    tree = make_tree(tmp_path / "m", {"a": "1"}, toml='name = "other"\nversion = "1.0"\n')
    mismatch = await api.call(
        "POST", "/modules/base/versions", params={"version": "1.0"}, content=tar_of(tree)
    )
    assert mismatch.status_code == 422
    assert "other" in mismatch.json()["detail"]
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    escape = await api.call(
        "POST", "/modules/base/versions", params={"version": "2.0"}, content=evil.getvalue()
    )
    assert escape.status_code == 422
    assert "escape" in escape.json()["detail"]


async def test_preview_and_manifest_of_a_template(api: Api, tmp_path: Path) -> None:
    await upload(
        api,
        "base",
        "1.0",
        tar_of(make_tree(tmp_path / "base", {"etc/motd": "hi", "usr/share/doc/x": "doc"})),
    )
    await upload(
        api,
        "slim",
        "1.0",
        tar_of(
            make_tree(
                tmp_path / "slim",
                {"etc/slim": "yes"},
                toml='mask = ["/usr/share/doc/"]\n[dependency_spec]\nbase = ">=1.0"\n',
            )
        ),
    )
    await api.ok(
        "POST", "/templates", json={"name": "web", "modules": [{"name": "slim", "version": "1.0"}]}
    )
    preview = await api.ok("GET", "/templates/web/preview")
    assert [(m["name"], m["explicit"]) for m in preview["layers"]] == [
        ("base", False),
        ("slim", True),
    ]
    assert preview["conflicts"] == []
    assert preview["footprint"]["files"] == 2
    assert preview["footprint"]["masks"][0]["paths"] == ["usr/share/doc", "usr/share/doc/x"]
    manifest = await api.ok("GET", "/templates/web/manifest")
    assert [e["path"] for e in manifest["entries"]] == [
        "etc",
        "etc/motd",
        "etc/slim",
        "usr",
        "usr/share",
    ]
    motd = manifest["entries"][1]
    blob = await api.call("GET", f"/blobs/{motd['sha256']}")
    assert blob.content == b"hi"


async def test_conflicts_show_in_preview_and_block_the_manifest(api: Api, tmp_path: Path) -> None:
    await upload(api, "a", "1.0", tar_of(make_tree(tmp_path / "a", {"etc/x": "one"})))
    await upload(api, "b", "1.0", tar_of(make_tree(tmp_path / "b", {"etc/x": "two"})))
    await api.ok(
        "POST",
        "/templates",
        json={
            "name": "t",
            "modules": [{"name": "a", "version": "1.0"}, {"name": "b", "version": "1.0"}],
        },
    )
    preview = await api.ok("GET", "/templates/t/preview")
    assert preview["conflicts"] == [
        {"path": "etc/x", "lower": "a@1.0", "upper": "b@1.0", "difference": "content"}
    ]
    manifest = await api.call("GET", "/templates/t/manifest")
    assert manifest.status_code == 409
    assert "etc/x" in manifest.json()["detail"]


async def test_a_template_naming_a_missing_module_previews_as_invalid(api: Api) -> None:
    await api.ok(
        "POST", "/templates", json={"name": "t", "modules": [{"name": "ghost", "version": "1.0"}]}
    )
    response = await api.call("GET", "/templates/t/preview")
    assert response.status_code == 422
    assert "ghost" in response.json()["detail"]


async def test_a_file_shared_by_versions_is_stored_once(api: Api, tmp_path: Path) -> None:
    shared = "the same bytes in both versions\n"
    await upload(api, "m", "1.0", tar_of(make_tree(tmp_path / "v1", {"a": shared, "b": "1"})))
    await upload(api, "m", "2.0", tar_of(make_tree(tmp_path / "v2", {"a": shared, "b": "2"})))
    store = api.app.state.store
    blobs = [p for p in store.blobs.rglob("*") if p.is_file()]
    contents = sorted(p.read_bytes() for p in blobs)
    assert contents.count(shared.encode()) == 1
    assert all(p.stat().st_mode & 0o777 == 0o444 for p in blobs)


async def test_the_materialized_tree_equals_the_manifest(api: Api, tmp_path: Path) -> None:
    from powernode.modules.entries import Entry
    from powernode.modules.materialize import materialize
    from tests.modules.test_materialize import tree_of

    tree = make_tree(tmp_path / "base", {"etc/hosts": "127.0.0.1 localhost\n", "srv/.keep": ""})
    (tree / "etc/hosts").chmod(0o600)
    (tree / "empty").mkdir()
    (tree / "etc/hosts.link").symlink_to("hosts")
    await upload(api, "base", "1.0", tar_of(tree))
    await api.ok(
        "POST", "/templates", json={"name": "t", "modules": [{"name": "base", "version": "1.0"}]}
    )
    manifest = await api.ok("GET", "/templates/t/manifest")
    entries = [Entry(**doc) for doc in manifest["entries"]]
    out = tmp_path / "rootfs"
    materialize(entries, api.app.state.store, out)
    assert tree_of(out) == [e._replace(verity=None) for e in entries]
    assert [e.path for e in entries] == [
        "empty",
        "etc",
        "etc/hosts",
        "etc/hosts.link",
        "srv",
        "srv/.keep",
    ]
    again = await api.ok("GET", "/templates/t/manifest")
    assert again == manifest  # deterministic


async def test_a_version_equal_under_pep440_is_refused_naming_the_existing_one(
    api: Api, tmp_path: Path
) -> None:
    """`1.1.0` after `1.1` would be the same version to templates: 409, naming `1.1`."""
    await upload(api, "base", "1.1", tar_of(make_tree(tmp_path / "a", {"a": "1"})))
    other = tar_of(make_tree(tmp_path / "b", {"b": "2"}))
    for spelling in ("1.1.0", "1.01", "0!1.1.0.0"):
        again = await api.call(
            "POST", "/modules/base/versions", params={"version": spelling}, content=other
        )
        assert again.status_code == 409, again.text
        assert (
            f"module base@1.1 already exists, which is the same PEP 440 version as {spelling}"
            in (again.json()["detail"])
        )
        assert again.json()["existing_version"] == "1.1"
    shown = await api.ok("GET", "/modules/base/versions/1.1.0")
    assert shown["version"] == "1.1"  # any spelling finds the one version
    assert (await api.call("GET", "/modules/base/versions/not-a-version")).status_code == 404
    listed = await api.ok("GET", "/modules")
    assert listed["items"][0]["versions"] == ["1.1"]


async def test_racing_imports_of_one_version_give_one_row_and_a_conflict(
    api: Api, tmp_path: Path
) -> None:
    """Both imports pass the early check; the unique version key lets only one be recorded, and
    the other gets the same 409 as a late import would."""
    from powernode.errors import Conflict
    from powernode.events.log import EventContext
    from powernode.modules import service
    from powernode.modules.entries import Entry
    from powernode.modules.importer import ImportedTree
    from powernode.modules.spec import ModuleSpec

    store = api.app.state.store
    await upload(api, "base", "1.0", tar_of(make_tree(tmp_path / "a", {"a": "1"})))
    tree = ImportedTree(None, None, ModuleSpec(), [Entry("x", "dir", 0o755, 0, 0)])
    ctx = EventContext(actor="test", clock=api.clock)
    async with api.db.sessions() as first, api.db.sessions() as second:
        await service.check_new_version(first, "base", "1.1")
        await first.rollback()  # as the route does while it reads the upload
        await service.check_new_version(second, "base", "1.1.0")
        await second.rollback()
        await service.record_version(first, ctx, store, name="base", version="1.1", tree=tree)

        async def late() -> None:
            await service.record_version(
                second, ctx, store, name="base", version="1.1.0", tree=tree
            )

        # On PostgreSQL the second insert waits for the first transaction on the unique index;
        # on SQLite the second transaction waits for the write lock. Either way it then loses.
        racing = asyncio.create_task(late())
        await asyncio.sleep(0.2)
        await first.commit()
        with pytest.raises(Conflict, match=r"module base@1\.1 already exists"):
            await racing
        await second.rollback()
    listed = await api.ok("GET", "/modules")
    assert listed["items"][0]["versions"] == ["1.0", "1.1"]


async def test_the_database_refuses_two_rows_of_one_pep440_version(api: Api) -> None:
    """The unique index holds even for rows written around the service."""
    from sqlalchemy.exc import IntegrityError

    from powernode.modules.models import Module, ModuleVersion

    now = api.clock.now()
    async with api.db.transaction() as session:
        module = Module(name="m", description="", created_at=now)
        session.add(module)
        await session.flush()
        row = {
            "module_id": module.id,
            "version_key": "1.1",
            "spec": {},
            "entries_sha256": "0" * 64,
            "file_count": 0,
            "total_bytes": 0,
            "created_at": now,
            "created_by": "test",
        }
        session.add(ModuleVersion(version="1.1", **row))
    with pytest.raises(IntegrityError):
        async with api.db.transaction() as session:
            session.add(ModuleVersion(version="1.1.0", **row))


async def test_the_spec_can_be_given_as_an_api_field(api: Api, tmp_path: Path) -> None:
    """A tree without module.toml plus a JSON `spec` field: the field is the spec."""
    tree = make_tree(tmp_path / "m", {"etc/app.conf": "x", "usr/share/doc/app/README": "doc"})
    spec = {
        "file_spec": ["- /usr/share/doc/", "+ *"],
        "package_spec": ["curl (>= 7.0)"],
        "dependency_spec": {},
        "mask": ["*.pyc"],
    }
    created = await api.call(
        "POST",
        "/modules/app/versions",
        params={"version": "1.0", "spec": json.dumps(spec)},
        content=tar_of(tree),
    )
    assert created.status_code == 201, created.text
    shown = created.json()["spec"]
    assert shown["package_spec"] == ["curl (>= 7.0)"]
    assert shown["file_spec"] == "- /usr/share/doc/\n+ *\n"
    entries = await api.ok("GET", "/modules/app/versions/1.0/entries")
    assert [e["path"] for e in entries] == ["etc", "etc/app.conf", "usr", "usr/share"]


async def test_a_spec_field_and_a_module_toml_must_agree(api: Api, tmp_path: Path) -> None:
    """Both given: fine when they say the same, refused (naming the keys) when they differ."""
    toml = 'file_spec = ["- *.md"]\npackages = ["curl"]\n'
    body = tar_of(make_tree(tmp_path / "m", {"a.md": "", "b": ""}, toml=toml))
    same = {"file_spec": "- *.md\n", "package_spec": ["curl"]}
    ok = await api.call(
        "POST",
        "/modules/m/versions",
        params={"version": "1.0", "spec": json.dumps(same)},
        content=body,
    )
    assert ok.status_code == 201, ok.text
    differ = await api.call(
        "POST",
        "/modules/m/versions",
        params={"version": "2.0", "spec": json.dumps({"package_spec": ["wget"]})},
        content=body,
    )
    assert differ.status_code == 422
    assert (
        "module.toml and the spec parameter differ in file_spec, package_spec"
        in (differ.json()["detail"])
    )


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("{not json", "the spec parameter is not valid JSON"),
        ('{"file_spec": "x bad"}', "the spec parameter: key 'file_spec': line 1: 'x bad'"),
        ('{"colour": "red"}', "key 'colour': unknown key"),
        ('{"version": "2.0"}', "the spec parameter says version 2.0, but the import is for 1.0"),
    ],
)
async def test_a_bad_spec_field_is_refused(
    api: Api, tmp_path: Path, spec: str, problem: str
) -> None:
    """Each problem with the spec field is a 422 that says what is wrong; nothing is stored."""
    response = await api.call(
        "POST",
        "/modules/m/versions",
        params={"version": "1.0", "spec": spec},
        content=tar_of(make_tree(tmp_path / "m", {"a": ""})),
    )
    assert response.status_code == 422, response.text
    assert problem in response.json()["detail"]
    assert (await api.ok("GET", "/modules"))["items"] == []


async def test_malformed_rules_are_refused_at_import(api: Api, tmp_path: Path) -> None:
    """A file_spec that cannot be parsed fails the import with its line, even for an empty
    tree, instead of being stored and failing later."""
    tree = make_tree(tmp_path / "m", {}, toml='file_spec = "+ /etc/***\\nx bad"\n')
    response = await api.call(
        "POST", "/modules/m/versions", params={"version": "1.0"}, content=tar_of(tree)
    )
    assert response.status_code == 422
    assert "key 'file_spec': line 2: 'x bad': unknown rule" in response.json()["detail"]
    assert (await api.call("GET", "/modules/m/versions/1.0")).status_code == 404


async def test_a_non_utf8_name_is_a_clear_422_and_records_nothing(api: Api, tmp_path: Path) -> None:
    """The name is shown escaped; no module row, no version row, no event."""
    root = make_tree(tmp_path / "m", {"ok": "x"})
    with open(bytes(root) + b"/caf\xe9", "w") as bad:  # noqa: ASYNC230 - a test fixture file
        bad.write("y")
    response = await api.call(
        "POST", "/modules/m/versions", params={"version": "1.0"}, content=tar_of(root)
    )
    assert response.status_code == 422, response.text
    assert "caf\\xe9: its name is not valid UTF-8" in response.json()["detail"]
    assert (await api.ok("GET", "/modules"))["items"] == []
    events = await api.ok("GET", "/events", params={"kind": "module.imported"})
    assert events["items"] == []


async def test_a_tree_with_backslashes_and_excluded_specials_imports(
    api: Api, tmp_path: Path
) -> None:
    """Backslashes are name characters; a fifo and the first name of a hard-linked file that
    file_spec excludes do not stop the import, and the link keeps its content."""
    unit = "lib/systemd/system/system-systemd\\x2dcryptsetup.slice"
    root = make_tree(
        tmp_path / "m",
        {unit: "[Unit]\n", "a/shared": "same inode\n"},
        toml='file_spec = ["- /a/", "- /run/"]\n',
    )
    (root / "b").mkdir()
    os.link(root / "a/shared", root / "b/shared")
    (root / "run").mkdir()
    os.mkfifo(root / "run/initctl")
    created = await upload(api, "m", "1.0", tar_of(root))
    assert created["file_count"] == 2
    entries = {e["path"]: e for e in await api.ok("GET", "/modules/m/versions/1.0/entries")}
    assert set(entries) == {"b", "b/shared", "lib", "lib/systemd", "lib/systemd/system", unit}
    blob = await api.call("GET", f"/blobs/{entries['b/shared']['sha256']}")
    assert blob.content == b"same inode\n"
