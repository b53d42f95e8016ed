"""Modules through the API: import a tar, list, show, entries, preview and manifest."""

from __future__ import annotations

import io
import tarfile
import textwrap
from pathlib import Path

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
            packages = ["libc6 (>= 2.36)"]
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
                toml='mask = ["/usr/share/doc/"]\n[dependencies]\nbase = ">=1.0"\n',
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
