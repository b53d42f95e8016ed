"""/api/v1/images (boot artifacts: upload, register, list, show) and /boot/v1 (serving them).

`/boot/v1` answers without a token: firmware (iPXE, UEFI HTTP boot) cannot present one, and a
boot artifact holds no secret (a node's seed is never baked into an image). It serves only
files that belong to a registered boot artifact, never other content of the store.
"""

from __future__ import annotations

import asyncio
import queue
import uuid
from typing import IO, Annotated, Any, cast

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import FileResponse, PlainTextResponse
from sqlalchemy import select

from powernode.api.deps import Operator, Reader, SessionDep, StoreDep
from powernode.api.problems import PROBLEM_RESPONSES
from powernode.db.crud import commit
from powernode.errors import Invalid, NotFound
from powernode.images import service
from powernode.images.ipxe import file_path, render_ipxe
from powernode.images.models import BootArtifact
from powernode.images.spec import Format
from powernode.templates.models import Template
from powernode.templates.service import get_template

router = APIRouter(prefix="/images", tags=["images"])
boot_router = APIRouter(prefix="/boot/v1", tags=["boot"], responses=PROBLEM_RESPONSES)

MAX_UPLOAD = 64 << 30
Sha256 = Annotated[str, Path(pattern="^[0-9a-f]{64}$")]


class _QueueReader:
    """A blocking file-like reader over chunks an async producer puts into a queue."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._buffer = b""
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self.chunks.get()
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


@router.head("/blobs/{sha256}")
async def has_blob(store: StoreDep, _: Reader, sha256: Sha256) -> Response:
    """200 when the content is already uploaded (the build skips it), else 404. A HEAD has no
    body; its headers say what a GET-like answer would carry."""
    if store.has(sha256):
        return Response(status_code=200, media_type="application/json")
    return Response(status_code=404, media_type="application/problem+json")


@router.put("/blobs/{sha256}", status_code=status.HTTP_201_CREATED)
async def upload_blob(
    request: Request, store: StoreDep, _: Operator, sha256: Sha256
) -> dict[str, Any]:
    """Upload one file of a boot artifact; it is stored only if its sha256 matches."""
    if store.has(sha256):
        return {"sha256": sha256, "stored": False}
    length = request.headers.get("content-length")
    if length is not None and int(length) > MAX_UPLOAD:
        raise Invalid(f"upload of {length} bytes exceeds the {MAX_UPLOAD} byte limit")
    reader = _QueueReader()
    source = cast(IO[bytes], reader)
    storing = asyncio.create_task(asyncio.to_thread(store.put_stream, source, expected=sha256))
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > MAX_UPLOAD:
                raise Invalid(f"upload exceeds the {MAX_UPLOAD} byte limit")
            if storing.done():
                break
            await asyncio.to_thread(reader.chunks.put, chunk)
    finally:
        if not storing.done():
            await asyncio.to_thread(reader.chunks.put, None)
    size = (await storing)[1]
    return {"sha256": sha256, "size": size, "stored": True}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=service.ArtifactOut)
async def register_artifact(
    body: service.ArtifactIn,
    session: SessionDep,
    store: StoreDep,
    caller: Operator,
    request: Request,
    response: Response,
) -> service.ArtifactOut:
    """Register a built artifact whose files are uploaded; the same build again returns the
    existing registration (200)."""
    now = request.app.state.clock.now()
    row, name, created = await service.register(session, store, caller.ctx, body, now=now)
    await commit(session)
    if not created:
        response.status_code = status.HTTP_200_OK
    return service.artifact_out(row, name)


@router.get("", response_model=list[service.ArtifactOut])
async def list_artifacts(
    session: SessionDep,
    _: Reader,
    template: Annotated[str | None, Query(description="Template name or id.")] = None,
    arch: Annotated[str | None, Query(pattern="^(amd64|arm64)$")] = None,
    format: Annotated[Format | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[service.ArtifactOut]:
    """Registered boot artifacts, newest first."""
    query = select(BootArtifact, Template.name).join(
        Template, Template.id == BootArtifact.template_id
    )
    if template is not None:
        row = await get_template(session, template)
        query = query.where(BootArtifact.template_id == row.id)
    if arch is not None:
        query = query.where(BootArtifact.arch == arch)
    if format is not None:
        query = query.where(BootArtifact.format == format.value)
    query = query.order_by(BootArtifact.created_at.desc(), BootArtifact.id.desc()).limit(limit)
    return [service.artifact_out(a, n) for a, n in (await session.execute(query)).all()]


@router.get("/{artifact_id}", response_model=service.ArtifactOut)
async def show_artifact(
    session: SessionDep, _: Reader, artifact_id: uuid.UUID
) -> service.ArtifactOut:
    row = await session.get(BootArtifact, artifact_id)
    if row is None:
        raise NotFound(f"boot artifact {artifact_id} does not exist")
    template = await session.get(Template, row.template_id)
    return service.artifact_out(row, template.name if template else str(row.template_id))


@boot_router.get("/files/{sha256}/{name:path}", response_class=FileResponse)
async def boot_file(session: SessionDep, store: StoreDep, sha256: Sha256, name: str) -> Any:
    """A registered boot artifact file (the name is only for the client's sake)."""
    if not await service.is_registered_file(session, sha256):
        raise NotFound(f"{sha256} is not a file of a registered boot artifact")
    return FileResponse(
        store.path(sha256),
        media_type="application/octet-stream",
        filename=name.rsplit("/", 1)[-1],
    )


@boot_router.get("/{template}/{arch}/boot.ipxe", response_class=PlainTextResponse)
async def boot_script(
    session: SessionDep,
    request: Request,
    template: str,
    arch: Annotated[str, Path(pattern="^(amd64|arm64)$")],
) -> str:
    """An iPXE script booting the template's newest initramfs from this control plane."""
    row, _ = await service.latest(session, template, arch, Format.INITRAMFS)
    kernel, initrd = row.files[0], row.files[1]
    return render_ipxe(
        file_path(kernel["sha256"], kernel["name"]),
        file_path(initrd["sha256"], initrd["name"]),
        str(row.details.get("cmdline", "")),
        base_url=str(request.base_url).rstrip("/"),
    )
