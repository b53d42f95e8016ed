"""Layers streamed from a registry into extraction: refused as surely as staged ones, and the
pipe between the event loop and the extraction thread (bounded, stoppable, cancellable)."""

from __future__ import annotations

import asyncio
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest

from powernode.agent.modules.errors import FetchFailed, Rejected
from powernode.agent.modules.stream import Pipe, StreamFailed, stream_blob
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.package import parse_module_manifest
from powernode.artifacts.reference import parse_reference
from powernode.artifacts.registry import RegistryClient, push_layout
from powernode.artifacts.signing import KeySigner
from powernode.modules.store import ContentStore
from tests.agent.modules.factories import (
    Published,
    apply,
    evil_layer,
    member,
    module_doc,
    policy_for,
    publish,
    publish_layer,
    state_snapshot,
)
from tests.artifacts.servers import Registry


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"agent-streaming/{name[:80]}"


async def pushed(published: Published, registry: Registry, repo: str) -> str:
    """Push the layout to the registry (the sync client runs its own loop: in a thread)."""
    await asyncio.to_thread(push_layout, published.layout, registry.ref(repo, published.version))
    return registry.ref(repo, published.version)


EVIL: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = {
    "absolute path": ([member("/etc/passwd")], "is an absolute path"),
    "dot-dot path": ([member("etc/../../escape")], "'..' component"),
    "escaping symlink": (
        [
            member("etc", tarfile.DIRTYPE, mode=0o755),
            member("etc/x", tarfile.SYMTYPE, linkname="../.."),
        ],
        "out of the root",
    ),
    "device node": ([member("dev/sda", tarfile.CHRTYPE)], "device node"),
    "setuid file": ([member("usr/bin/su", mode=0o4755)], "setuid or setgid"),
}


@pytest.mark.parametrize("case", list(EVIL))
async def test_a_bad_layer_from_a_registry_is_refused_while_streaming(
    case: str,
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    registry: Registry,
    repo: str,
) -> None:
    """Signed by the trusted publisher and intact in the registry, but unsafe: refused naming
    the cause (not as a damaged copy), and the active root is unchanged."""
    policy = policy_for(publisher)
    base = publish(
        store, tmp_path / "base-oci", publisher, name="base", files={"etc/base": b"streaming\n"}
    )
    await apply(state, [module_doc(base, policy)])
    before = state_snapshot(state)
    members, cause = EVIL[case]
    evil = publish_layer(tmp_path / "evil-oci", publisher, evil_layer(members), name="web")
    doc = module_doc(evil, policy, reference=await pushed(evil, registry, repo))

    with pytest.raises(Rejected) as caught:
        await apply(state, [module_doc(base, policy), doc])

    assert str(caught.value).startswith("module web: unsafe or damaged layer: ")
    assert cause in str(caught.value)
    assert "damaged or altered" not in str(caught.value)
    assert state_snapshot(state) == before


async def test_a_truncated_layer_from_a_registry_is_refused(
    state: Path, publisher: KeySigner, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """A layer cut in half (and signed that way) ends the stream early: truncated."""
    layer = evil_layer([member("etc/web.conf", data=os.urandom(300_000))])
    cut = publish_layer(tmp_path / "cut-oci", publisher, layer[: len(layer) // 2], name="web")
    doc = module_doc(cut, policy_for(publisher), reference=await pushed(cut, registry, repo))

    with pytest.raises(Rejected, match=r"module web: unsafe or damaged layer: .*truncated"):
        await apply(state, [doc])

    assert state_snapshot(state) == {"current": None, "generations": [], "root": {}}


async def test_files_streamed_from_a_registry_are_checked_against_the_payload(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    registry: Registry,
    repo: str,
) -> None:
    """The digests computed while writing are what the payload's map is compared with."""
    # Content of its own: the registry's storage is shared by the session's tests.
    content = {"etc/web.conf": b"checked while streaming\n"}
    web = publish(store, tmp_path / "web-oci", publisher, name="web", files=content)
    files = {"etc/web.conf": {"sha256": "0" * 64}}
    doc = module_doc(
        web, policy_for(publisher), reference=await pushed(web, registry, repo), files=files
    )

    with pytest.raises(Rejected, match=r"files do not match: etc/web\.conf: sha256 [0-9a-f]{64}"):
        await apply(state, [doc])

    assert state_snapshot(state) == {"current": None, "generations": [], "root": {}}


async def test_the_pipe_delivers_in_order_and_holds_the_producer_while_full() -> None:
    """Reads honour their size; a full pipe keeps the producer waiting until it drains."""
    pipe = Pipe(asyncio.get_running_loop(), limit=8)
    assert await pipe.put(b"abcdefgh")
    blocked = asyncio.ensure_future(pipe.put(b"ijkl"))
    await asyncio.sleep(0.05)
    assert not blocked.done()

    first = await asyncio.to_thread(pipe.read, 3)
    second = await asyncio.to_thread(pipe.read, 100)
    assert await blocked is True
    pipe.close()
    rest = await asyncio.to_thread(pipe.read)
    end = await asyncio.to_thread(pipe.read)

    assert (first, second, rest, end) == (b"abc", b"defgh", b"ijkl", b"")


async def test_a_reader_that_stops_stops_the_producer_and_an_error_reaches_the_reader() -> None:
    """put says False once the reader gave up; close(error) is raised after the data."""
    pipe = Pipe(asyncio.get_running_loop(), limit=4)
    assert await pipe.put(b"1234")
    waiting = asyncio.ensure_future(pipe.put(b"5678"))
    await asyncio.to_thread(pipe.stop_reading)
    assert await waiting is False

    failing = Pipe(asyncio.get_running_loop())
    assert await failing.put(b"data")
    failing.close(StreamFailed("registry broke off"))
    assert await asyncio.to_thread(failing.read) == b"data"
    with pytest.raises(StreamFailed, match="registry broke off"):
        await asyncio.to_thread(failing.read)


async def test_cancelling_a_stream_waits_for_the_reading_thread(
    store: ContentStore, publisher: KeySigner, tmp_path: Path, registry: Registry, repo: str
) -> None:
    """The thread sees the stream fail at its next read and has ended when the cancellation
    is delivered; the response is closed."""
    big = publish(
        store, tmp_path / "big-oci", publisher, name="big", files={"a": os.urandom(8 << 20)}
    )
    reference = await pushed(big, registry, repo)
    layer = parse_module_manifest(OciLayout.open(big.layout).read_blob(big.digest)).layer
    started, finished = threading.Event(), threading.Event()
    seen: list[BaseException] = []

    def slow(pipe: Pipe) -> int:
        total = 0
        try:
            while data := pipe.read(4096):
                total += len(data)
                started.set()
                threading.Event().wait(0.01)
        except StreamFailed as exc:
            seen.append(exc)
            raise
        finally:
            finished.set()
        return total

    async with RegistryClient() as client:
        ref = parse_reference(reference, insecure=True)
        task = asyncio.ensure_future(stream_blob(client, ref, layer, slow))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert finished.is_set()
    assert [str(e) for e in seen] == [f"fetching blob {layer.digest} was cancelled"]


class CuttingProxy:
    """A TCP proxy to the registry that closes each connection once it has passed `limit`
    bytes towards the client: a registry breaking off in the middle of a blob."""

    def __init__(self, upstream: str, limit: int) -> None:
        self.upstream_host, port = upstream.split(":")
        self.upstream_port = int(port)
        self.limit = limit
        self.server: asyncio.Server | None = None
        self.cut = 0

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)

        async def upwards() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downwards() -> None:
            passed = 0
            while data := await up_reader.read(65536):
                if passed + len(data) > self.limit:
                    self.cut += 1
                    return
                passed += len(data)
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.ensure_future(upwards()), asyncio.ensure_future(downwards())]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        await asyncio.wait(pumps)
        for side in (writer, up_writer):
            side.close()


async def test_a_registry_that_breaks_off_mid_layer_is_a_fetch_failure(
    state: Path,
    store: ContentStore,
    publisher: KeySigner,
    tmp_path: Path,
    registry: Registry,
    repo: str,
) -> None:
    """The connection closes in the middle of the layer: the pull stage fails naming the
    module, the extraction thread has stopped and the active root is unchanged."""
    policy = policy_for(publisher)
    base = publish(store, tmp_path / "base-oci", publisher, name="base", files={"b": b"cut\n"})
    await apply(state, [module_doc(base, policy)])
    before = state_snapshot(state)
    big = publish(
        store, tmp_path / "web-oci", publisher, name="web", files={"a": os.urandom(2 << 20)}
    )
    await pushed(big, registry, repo)

    async with CuttingProxy(registry.host, limit=512 << 10) as proxy:
        doc = module_doc(big, policy, reference=f"http://{proxy.host}/{repo}:{big.version}")
        with pytest.raises(FetchFailed, match=r"module web: cannot fetch http://") as caught:
            await apply(state, [module_doc(base, policy), doc])

    assert proxy.cut >= 1
    assert "broke off fetching blob" in str(caught.value)
    assert caught.value.stage == "pull"
    assert state_snapshot(state) == before
    assert [t for t in threading.enumerate() if t.name == "module-extract"] == []
