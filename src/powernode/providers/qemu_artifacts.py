"""Which registered boot artifact a qemu node boots: the newest one of its template, arch and
format, with its files' paths in the control plane's content store."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from powernode.errors import NotFound
from powernode.images.service import newest
from powernode.modules.store import ContentStore
from powernode.settings import Settings


@dataclass(frozen=True)
class ArtifactFiles:
    """One registered artifact, its files by name (in registration order, main file first)."""

    id: uuid.UUID
    format: str
    arch: str
    digest: str
    files: dict[str, Path]
    details: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        try:
            return self.files[name]
        except KeyError:
            raise NotFound(
                f"{self.format} artifact {self.digest} has no file {name!r} "
                f"(it has: {', '.join(self.files) or 'none'}); rebuild it"
            ) from None

    @property
    def main(self) -> Path:
        return next(iter(self.files.values()))


def content_store(settings: Settings) -> ContentStore:
    return ContentStore(settings.data_dir / "content")


async def latest_artifact(
    session: AsyncSession,
    settings: Settings,
    template_id: uuid.UUID,
    arch: str,
    fmt: str,
    *,
    template_name: str | None = None,
) -> ArtifactFiles:
    """The newest `fmt` artifact of the template for `arch`; NotFound with the command that
    builds one when there is none, or when its bytes are missing from the content store."""
    row = await newest(session, template_id, arch, fmt)
    template = template_name or str(template_id)
    if row is None:
        raise NotFound(
            f"no {fmt} artifact for template {template} arch {arch}: "
            f"run `powernode image build {template} --arch {arch}`"
        )
    store = content_store(settings)
    files: dict[str, Path] = {}
    for entry in row.files:
        path = store.path(str(entry["sha256"]))
        if not path.is_file():
            raise NotFound(
                f"{fmt} artifact for template {template} arch {arch}: file {entry['name']} "
                f"(sha256 {entry['sha256']}) is missing from the content store ({path}); "
                f"run `powernode image build {template} --arch {arch}` again"
            )
        files[str(entry["name"])] = path
    return ArtifactFiles(
        id=row.id,
        format=row.format,
        arch=row.arch,
        digest=row.digest,
        files=files,
        details=dict(row.details or {}),
    )
