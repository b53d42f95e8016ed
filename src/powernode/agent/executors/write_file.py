"""Write a file atomically (temporary file, fsync, rename), with a given mode.

Payload {"path": absolute path without '..', "content": text (UTF-8) or "content_b64": base64,
exactly one of them, "mode": int 0..0o7777 = 0o644}. The parent directory must exist. Result
{"path", "bytes", "sha256", "mode"}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from powernode.agent.errors import PayloadError, TaskFailed
from powernode.agent.executors import ExecutorMeta, TaskContext
from powernode.agent.executors._payload import integer, only, text
from powernode.agent.fsutil import atomic_write

meta = ExecutorMeta(kind="write_file")


def _target(raw: str) -> PurePosixPath:
    path = PurePosixPath(raw)
    if not path.is_absolute():
        raise PayloadError(f"path {raw!r} is not absolute")
    if ".." in path.parts:
        raise PayloadError(f"path {raw!r} contains '..'")
    if "\0" in raw or path == PurePosixPath("/"):
        raise PayloadError(f"path {raw!r} does not name a file")
    return path


def _content(payload: dict[str, Any]) -> bytes:
    if ("content" in payload) == ("content_b64" in payload):
        raise PayloadError("give exactly one of content and content_b64")
    if "content" in payload:
        return text(payload, "content").encode("utf-8")
    try:
        return base64.b64decode(text(payload, "content_b64"), validate=True)
    except binascii.Error as exc:
        raise PayloadError(f"content_b64 is not base64: {exc}") from exc


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Write the file; result as in the module docstring."""
    only(payload, ("path", "content", "content_b64", "mode"))
    path = _target(text(payload, "path"))
    data = _content(payload)
    mode = integer(payload, "mode", 0o644, 0, 0o7777)
    try:
        await asyncio.to_thread(atomic_write, Path(path), data, mode)
    except OSError as exc:
        raise TaskFailed(
            f"cannot write {path}: {exc.strerror or exc}", {"path": str(path)}
        ) from exc
    return {
        "path": str(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "mode": mode,
    }
