"""A blob from the registry to a worker thread as it arrives, never staged on disk; and
`in_thread`, the way every blocking step of an apply runs.

`stream_blob(client, ref, desc, consume)` runs `consume(readable)` in a worker thread while
the event loop reads the blob's HTTP response into a bounded `Pipe` that `readable` drains: the
layer is decompressed, checked and extracted while it downloads. Nothing is hashed here (the
layer reader checks size and digest once, as it reads); the response is read up to one byte
past the declared size, so a longer blob is refused by that check without being read whole.

Contract: when `stream_blob` returns or raises, the worker thread has finished and the response
is closed. If the consumer fails, the producer stops at its next chunk; if the producer fails
(registry unreachable, connection cut), the consumer's next read raises `StreamFailed` with
the cause. Cancelling `stream_blob` makes the consumer's next read raise `StreamFailed` (what
was buffered is dropped) and waits for the thread before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from powernode.artifacts.distribution import DistributionClient
from powernode.artifacts.oci import Descriptor
from powernode.artifacts.reference import Reference
from powernode.errors import PowernodeError

T = TypeVar("T")
CHUNK = 1 << 20
PIPE_BYTES = 32 << 20
"""Bytes the event loop may read ahead of the consumer."""


class StreamFailed(Exception):
    """The blob did not arrive whole; `cause` says why (None: the stream was abandoned)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class Pipe:
    """Bytes from the event loop to one reading thread; the loop waits while it is full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = PIPE_BYTES) -> None:
        self._loop = loop
        self._limit = limit
        self._lock = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._eof = False
        self._error: StreamFailed | None = None
        self._reading = True  # False once the reader gave up: the producer stops
        self._waiting = False  # the producer waits for room
        self._room = asyncio.Event()

    # the event loop's side

    async def put(self, data: bytes) -> bool:
        """Add `data` once there is room; False if the reader gave up (stop producing)."""
        while True:
            with self._lock:
                if not self._reading or self._eof:
                    return False
                if self._buffered < self._limit:
                    self._chunks.append(data)
                    self._buffered += len(data)
                    self._lock.notify()
                    return True
                self._waiting = True
                self._room.clear()
            await self._room.wait()

    def close(self, error: StreamFailed | None = None) -> None:
        """No more data; with `error`, the reader raises it once it has read what came. The
        first close (or abort) counts."""
        with self._lock:
            if self._eof:
                return
            self._eof = True
            self._error = error
            self._lock.notify_all()

    def abort(self, error: StreamFailed) -> None:
        """Drop what is buffered: the reader's next read raises `error` (cancellation)."""
        with self._lock:
            self._eof = True
            self._error = error
            self._chunks.clear()
            self._buffered = 0
            self._lock.notify_all()

    # the reading thread's side

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes (a chunk as it came, when -1); b"" at the end."""
        with self._lock:
            while not self._chunks and not self._eof:
                self._lock.wait()
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                return b""
            data = self._chunks.popleft()
            if 0 <= size < len(data):
                self._chunks.appendleft(data[size:])
                data = data[:size]
            self._buffered -= len(data)
            if self._waiting and self._buffered <= self._limit // 2:
                self._waiting = False
                self._loop.call_soon_threadsafe(self._room.set)
            return data

    def stop_reading(self) -> None:
        """The reader is done (or gave up): the producer stops at its next `put`."""
        with self._lock:
            self._reading = False
            self._chunks.clear()
            self._buffered = 0
        self._loop.call_soon_threadsafe(self._room.set)


async def in_thread(func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` in a worker thread, waited for even when the task is cancelled meanwhile."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        _retrieve(work)
        raise


async def stream_blob(
    client: DistributionClient, ref: Reference, desc: Descriptor, consume: Callable[[Pipe], T]
) -> T:
    """`consume(pipe)` in a worker thread while the blob `desc` of `ref` streams into `pipe`."""
    pipe = Pipe(asyncio.get_running_loop())
    feed = asyncio.ensure_future(_feed(client, ref, desc, pipe))
    work = asyncio.ensure_future(asyncio.to_thread(_consume, pipe, consume))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        pipe.abort(StreamFailed(f"fetching blob {desc.digest} was cancelled"))
        await asyncio.wait([work])
        _retrieve(work)
        raise
    finally:
        feed.cancel()
        await asyncio.wait([feed])


def _retrieve(work: asyncio.Future[Any]) -> None:
    """Mark the outcome of work abandoned to a cancellation as seen (asyncio logs it else)."""
    if not work.cancelled():
        work.exception()


def _consume(pipe: Pipe, consume: Callable[[Pipe], T]) -> T:
    try:
        return consume(pipe)
    finally:
        pipe.stop_reading()


async def _feed(client: DistributionClient, ref: Reference, desc: Descriptor, pipe: Pipe) -> None:
    """Read the blob into `pipe`, at most one byte past its declared size."""
    what = f"fetching blob {desc.digest}"
    error: StreamFailed | None = None
    try:
        url = f"/v2/{ref.repository}/blobs/{desc.digest}"
        response = await client.request("GET", ref, url, what=what, ok=(200,), stream=True)
        try:
            left = desc.size + 1
            async for piece in response.aiter_raw(CHUNK):
                if not await pipe.put(piece[:left]):
                    return
                left -= len(piece)
                if left <= 0:
                    break
        finally:
            await response.aclose()
    except PowernodeError as exc:
        error = StreamFailed(exc.detail, exc)
    except httpx.TransportError as exc:
        error = StreamFailed(f"registry {ref.registry} broke off {what}: {exc}", exc)
    except Exception as exc:  # the reader must hear of it, whatever it is
        error = StreamFailed(f"{what} failed: {exc!r}", exc)
    except asyncio.CancelledError:
        error = StreamFailed(f"{what} was cancelled")
        raise
    finally:
        pipe.close(error)
