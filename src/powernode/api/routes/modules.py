"""/api/v1/modules and /api/v1/blobs"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from powernode.api.deps import Cursor, Limit, Operator, Reader, SessionDep, StoreDep
from powernode.db.crud import commit
from powernode.errors import Invalid
from powernode.modules import service
from powernode.modules.service import NAME_PATTERN, ModuleOut, ModuleVersionOut, version_out
from powernode.schemas import PageOut

# Percent-encoding can triple a query parameter; uvicorn (h11) refuses request lines over 16 KiB
# with a bare 400, so the field stays well under a third of that.
SPEC_FIELD_MAX = 4096

router = APIRouter(tags=["modules"])

ModuleName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100)]
VersionText = Annotated[str, Path(min_length=1, max_length=64)]
MAX_UPLOAD = 8 << 30  # refuse archives past 8 GiB rather than fill the disk

_TAR_BODY = {
    "requestBody": {
        "required": True,
        "description": "The module tree as a tar archive (plain, gzip, bzip2 or xz); a "
        "top-level module.toml, if present, must be its first member. `file_spec` decides which "
        "members the module holds; a member it excludes is never refused.",
        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_SPEC_FIELD = (
    "The spec as a JSON object with module.toml's keys (`description`, `file_spec`, `mask`, "
    "`package_spec`, `dependency_spec`, `extends`; `name` and `version` must match the import), "
    'e.g. `{"file_spec": ["+ /etc/***", "- *"], "package_spec": ["nginx (>= 1.22)"]}`. Use '
    "it instead of a module.toml in the archive; when both are given they must say the same, "
    "else the import is refused. Up to 4,096 characters (percent-encoded, a request line stays "
    "under the server's 16 KiB limit): put longer specs in module.toml."
)


@router.get("/modules")
async def list_modules(
    session: SessionDep, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> PageOut[ModuleOut]:
    page = await service.list_modules(session, limit=limit, cursor=cursor)
    versions = await service.versions_of(session, [m.id for m in page.items])
    return PageOut(
        items=[
            ModuleOut(id=m.id, name=m.name, versions=versions[m.id], created_at=m.created_at)
            for m in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/modules/{name}/versions", status_code=status.HTTP_201_CREATED, openapi_extra=_TAR_BODY
)
async def import_version(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    caller: Operator,
    name: ModuleName,
    version: Annotated[str, Query(min_length=1, max_length=64, description="The new version.")],
    preserve_owner: Annotated[
        bool, Query(description="Keep the archive's uid/gid instead of root:root.")
    ] = False,
    spec: Annotated[str | None, Query(max_length=SPEC_FIELD_MAX, description=_SPEC_FIELD)] = None,
) -> ModuleVersionOut:
    """Import a module version from a tar of its tree. Versions are immutable: a version equal
    to an existing one under PEP 440 (`1.1` and `1.1.0`) is a conflict."""
    fields = service.parse_spec_field(spec)
    await service.check_new_version(session, name, version)
    # Receiving and hashing a large tree takes a while: do not hold a transaction (on SQLite,
    # the write lock) meanwhile; the version is recorded in a fresh one afterwards.
    await session.rollback()
    with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD:
                raise Invalid(f"the archive is larger than {MAX_UPLOAD >> 30} GiB")
            spool.write(chunk)
        spool.seek(0)
        tree = await asyncio.to_thread(
            service.read_upload,
            spool,
            store,
            name=name,
            version=version,
            preserve_owner=preserve_owner,
            fields=fields,
        )
    module, row = await service.record_version(
        session, caller.ctx, store, name=name, version=version, tree=tree
    )
    await commit(session)
    return version_out(module, row)


@router.get("/modules/{name}/versions/{version}")
async def get_version(
    session: SessionDep, _: Reader, name: ModuleName, version: VersionText
) -> ModuleVersionOut:
    """One version; any PEP 440 spelling of it finds it (`1.1.0` finds `1.1`)."""
    module, row = await service.get_version(session, name, version)
    return version_out(module, row)


@router.get("/modules/{name}/versions/{version}/entries")
async def version_entries(
    session: SessionDep, store: StoreDep, _: Reader, name: ModuleName, version: VersionText
) -> list[dict[str, Any]]:
    """Every path the version contributes, with type, mode, owner, size, digests."""
    row = (await service.get_version(session, name, version))[1]
    return [e.document() for e in service.entries_of(store, row.entries_sha256)]


@router.get(
    "/blobs/{sha256}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def get_blob(
    store: StoreDep,
    _: Reader,
    sha256: Annotated[str, Path(pattern="^[0-9a-f]{64}$")],
) -> StreamingResponse:
    """File content by sha256, for composing a template on another machine."""
    handle = store.open(sha256)
    return StreamingResponse(_chunks(handle), media_type="application/octet-stream")


async def _chunks(handle: Any) -> Any:
    try:
        while chunk := await asyncio.to_thread(handle.read, 1 << 20):
            yield chunk
    finally:
        handle.close()
