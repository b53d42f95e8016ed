"""HTTP plumbing of the registry client: resendable bodies, capped reads, registry errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from powernode.artifacts.reference import Reference
from powernode.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PowernodeError,
    Unauthorized,
    Unavailable,
)

CHUNK = 1 << 20
_CATEGORIES: dict[int, type[PowernodeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: Conflict,
    429: Unavailable,
}


class DigestMismatch(Invalid):
    """What a registry sent is not what was asked for (digest or size)."""

    title = "Content does not match its digest"


@dataclass(frozen=True)
class Body:
    """A request body that can be sent again (after an authentication challenge).

    Either `data`, or `length` bytes of the file `path` from `offset`, read 1 MiB at a time.
    """

    data: bytes = b""
    path: Path | None = None
    offset: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return self.length if self.path is not None else len(self.data)

    def part(self, offset: int, length: int) -> Body:
        """`length` bytes of this body from `offset`: a chunk of a chunked upload."""
        if self.path is None:
            return Body(data=self.data[offset : offset + length])
        return Body(path=self.path, offset=self.offset + offset, length=length)

    def content(self) -> bytes | AsyncIterator[bytes]:
        return self.data if self.path is None else self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        assert self.path is not None
        left = self.length
        with self.path.open("rb") as source:
            source.seek(self.offset)
            while left > 0:
                piece = source.read(min(CHUNK, left))
                if not piece:
                    raise Invalid(f"{self.path} is shorter than expected")
                left -= len(piece)
                yield piece


async def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The body of a streamed response, refused past `limit` bytes; closes the response."""
    data = bytearray()
    try:
        async for piece in response.aiter_bytes(CHUNK):
            data += piece
            if len(data) > limit:
                raise Invalid(f"{what}: the answer is larger than {limit} bytes")
    finally:
        await response.aclose()
    return bytes(data)


def location(response: httpx.Response, ref: Reference, what: str) -> httpx.URL:
    """The absolute URL of a response's `Location` (upload sessions)."""
    found = response.headers.get("location")
    if not found:
        raise Invalid(f"{ref.where} gave no Location for {what}")
    return response.url.join(found)


def registry_error(response: httpx.Response, ref: Reference, what: str) -> PowernodeError:
    """The domain error for a registry's refusal, with the registry's own words."""
    detail = f"{what} on {ref.where} failed: HTTP {response.status_code}"
    try:
        errors = response.json().get("errors") or []
        words = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        words = response.text[:200].strip()
    if words:
        detail += f" ({words})"
    status = response.status_code
    kind = _CATEGORIES.get(status, Unavailable if status >= 500 else Invalid)
    return kind(detail, registry=ref.registry, repository=ref.repository, status=status)
