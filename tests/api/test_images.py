"""/api/v1/images and /boot/v1: uploads verified by sha256, registration (idempotent, refused
while files are missing or when a rebuild differs), listing, serving only registered files."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import select

from powernode.auth.roles import Role
from powernode.events.models import FleetEvent
from tests.api.conftest import Api
from tests.api.test_distribution import import_module

KERNEL = b"kernel bytes " * 1000
INITRD = b"initramfs bytes " * 5000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _template(api: Api, tmp_path: Path) -> None:
    await import_module(api, tmp_path, "web", "1.0")
    await api.ok(
        "POST", "/templates", json={"name": "edge", "modules": [{"name": "web", "version": "1.0"}]}
    )


def _body(inputs: str = "a" * 64, **changes: Any) -> dict[str, Any]:
    return {
        "template": "edge",
        "template_version": 1,
        "arch": "amd64",
        "format": "initramfs",
        "inputs_digest": f"sha256:{inputs}",
        "kernel_version": "6.1.0-test-amd64",
        "digest": f"sha256:{_sha(KERNEL)}",
        "files": [
            {"name": "vmlinuz", "sha256": _sha(KERNEL), "size": len(KERNEL)},
            {"name": "initramfs.img", "sha256": _sha(INITRD), "size": len(INITRD)},
        ],
        "details": {"cmdline": "console=ttyS0 quiet"},
        **changes,
    }


async def _upload(api: Api, data: bytes, role: Role = Role.OPERATOR) -> int:
    response = await api.call("PUT", f"/images/blobs/{_sha(data)}", role=role, content=data)
    return response.status_code


async def test_files_upload_then_register_list_and_serve(api: Api, tmp_path: Path) -> None:
    await _template(api, tmp_path)
    missing = await api.call("POST", "/images", json=_body())
    assert missing.status_code == 409
    assert set(missing.json()["missing"]) == {_sha(KERNEL), _sha(INITRD)}

    assert (await api.call("HEAD", f"/images/blobs/{_sha(KERNEL)}")).status_code == 404
    assert await _upload(api, KERNEL) == 201
    assert await _upload(api, INITRD) == 201
    assert (await api.call("HEAD", f"/images/blobs/{_sha(KERNEL)}")).status_code == 200

    created = await api.call("POST", "/images", json=_body())
    assert created.status_code == 201, created.text
    artifact = created.json()
    assert artifact["template"] == "edge"
    assert artifact["size"] == len(KERNEL) + len(INITRD)
    again = await api.call("POST", "/images", json=_body())
    assert again.status_code == 200
    assert again.json()["id"] == artifact["id"]

    listed = await api.ok("GET", "/images", params={"template": "edge", "format": "initramfs"})
    assert [a["id"] for a in listed] == [artifact["id"]]
    assert await api.ok("GET", "/images", params={"arch": "arm64"}) == []
    shown = await api.ok("GET", f"/images/{artifact['id']}")
    assert shown["files"][1]["name"] == "initramfs.img"

    served = await api.http.get(f"/boot/v1/files/{_sha(INITRD)}/initramfs.img")
    assert served.status_code == 200
    assert served.content == INITRD
    script = await api.http.get("/boot/v1/edge/amd64/boot.ipxe")
    assert script.status_code == 200
    assert script.text.startswith("#!ipxe")
    assert f"/boot/v1/files/{_sha(KERNEL)}/vmlinuz" in script.text
    assert "set base-url http://test" in script.text

    async with api.db.read_sessions() as session:
        kinds = list(
            await session.scalars(
                select(FleetEvent.kind).where(FleetEvent.kind == "image.registered")
            )
        )
    assert kinds == ["image.registered"]


async def test_a_rebuild_with_other_bytes_is_refused_as_not_reproducible(
    api: Api, tmp_path: Path
) -> None:
    await _template(api, tmp_path)
    other = b"another kernel"
    for data in (KERNEL, INITRD, other):
        await _upload(api, data)
    assert (await api.call("POST", "/images", json=_body())).status_code == 201
    body = _body(digest=f"sha256:{_sha(other)}")
    body["files"][0] = {"name": "vmlinuz", "sha256": _sha(other), "size": len(other)}
    refused = await api.call("POST", "/images", json=body)
    assert refused.status_code == 409
    assert "not reproducible" in refused.json()["detail"]


async def test_uploads_are_checked_and_need_the_operator_role(api: Api) -> None:
    wrong = await api.call("PUT", f"/images/blobs/{'0' * 64}", content=b"not that")
    assert wrong.status_code == 422
    assert "does not match" in wrong.json()["detail"]
    assert await _upload(api, KERNEL, role=Role.VIEWER) == 403
    assert (
        await api.call("PUT", f"/images/blobs/{_sha(KERNEL)}", role=None, content=KERNEL)
    ).status_code == 401


async def test_bad_registrations_are_refused_naming_the_field(api: Api, tmp_path: Path) -> None:
    await _template(api, tmp_path)
    for data in (KERNEL, INITRD):
        await _upload(api, data)
    bad_name = _body()
    bad_name["files"][0]["name"] = "../../etc/passwd"
    response = await api.call("POST", "/images", json=bad_name)
    assert response.status_code == 422
    assert (await api.call("POST", "/images", json=_body(arch="riscv"))).status_code == 422
    wrong_size = _body()
    wrong_size["files"][0]["size"] = 1
    response = await api.call("POST", "/images", json=wrong_size)
    assert response.status_code == 409
    assert "bytes, not 1" in response.json()["detail"]
    assert (await api.call("POST", "/images", json=_body(template="nope"))).status_code == 404


async def test_boot_serves_no_file_that_is_not_a_registered_artifact(
    api: Api, tmp_path: Path
) -> None:
    await _template(api, tmp_path)
    blobs = tmp_path / "data" / "content" / "blobs"
    module_file = next(p for p in blobs.rglob("*") if p.is_file())
    response = await api.http.get(f"/boot/v1/files/{module_file.name}/x")
    assert response.status_code == 404
    missing = await api.http.get("/boot/v1/edge/amd64/boot.ipxe")
    assert missing.status_code == 404
    assert "powernode image build edge --arch amd64" in missing.json()["detail"]
