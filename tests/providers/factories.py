"""Boot artifacts registered the way the image builder registers them: bytes in the content
store, a `boot_artifacts` row naming them."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Any

from powernode.db.engine import Database
from powernode.images.models import BootArtifact
from powernode.modules.store import ContentStore

INITRAMFS_FILES = {"vmlinuz": b"kernel bytes", "initramfs.img": b"initramfs bytes"}


async def register_artifact(
    db: Database,
    data_dir: Path,
    template_id: uuid.UUID,
    *,
    arch: str = "amd64",
    fmt: str = "initramfs",
    files: dict[str, bytes] | None = None,
    details: dict[str, Any] | None = None,
    created_at: dt.datetime | None = None,
    store_bytes: bool = True,
) -> BootArtifact:
    """A registered artifact of `fmt` for the template; `store_bytes=False` leaves its bytes
    out of the content store (a store that lost them)."""
    files = files if files is not None else INITRAMFS_FILES
    store = ContentStore(data_dir / "content")
    entries: list[dict[str, Any]] = []
    for name, data in files.items():
        sha = store.put_bytes(data) if store_bytes else hashlib.sha256(data).hexdigest()
        entries.append({"name": name, "sha256": sha, "size": len(data)})
    row = BootArtifact(
        template_id=template_id,
        template_version=1,
        inputs_digest="sha256:" + hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        arch=arch,
        format=fmt,
        kernel_version="6.1.0-test-amd64",
        digest="sha256:" + entries[0]["sha256"],
        size=sum(len(d) for d in files.values()),
        files=entries,
        details=details if details is not None else {"cmdline": "console=ttyS0 quiet"},
        created_by="test",
        created_at=created_at or dt.datetime.now(dt.UTC),
    )
    async with db.transaction() as session:
        session.add(row)
    return row
