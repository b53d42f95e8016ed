"""Fetch a module artifact and its signatures into a staging OCI layout under the state dir.

Sources:
- a registry reference (`host[:port]/repo[:tag][@digest]`, `http://` for plain HTTP): the
  manifest, its config, its referrers and, for cosign's tag flavour, the `sha256-<hex>.sig`
  tag are pulled with `RegistryClient` (every blob and manifest checked against its digest
  while it streams). The layer is not staged: `Pulled.remote` streams it into extraction once
  the signatures are verified (`stream`), and the layer reader checks its size and digest. A
  registry that is the control plane (its host:port is one of the seed's URLs) is reached with
  the node's mutual TLS credentials; any other with the system's trust store.
- `oci:DIR[:TAG]`, an OCI layout on the node (preloaded, air-gapped): the manifest (by TAG, else
  by the desired digest), its blobs and its signature manifests are copied, each checked
  against its digest, so later changes to DIR cannot affect what is verified.

Nothing is trusted here: `verify` decides. The staging layout is the only thing written.
`pull_module` is an async context manager: the registry connection stays open inside it, for
streaming the layer.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from powernode.agent import tls
from powernode.agent.modules.errors import FetchFailed, Rejected
from powernode.agent.modules.request import ModuleRequest
from powernode.agent.modules.stream import Pipe, StreamFailed, stream_blob
from powernode.agent.state import StateDir
from powernode.artifacts.layout import OciLayout
from powernode.artifacts.oci import Descriptor, manifest_children, parse_manifest
from powernode.artifacts.reference import Reference, parse_reference
from powernode.artifacts.registry import RegistryClient
from powernode.artifacts.signing import signature_tag
from powernode.artifacts.transport import DigestMismatch
from powernode.errors import Invalid, NotFound, PowernodeError

T = TypeVar("T")
LAYOUT_PREFIX = "oci:"


@dataclass(frozen=True)
class NodeTls:
    """The node's mutual TLS client context, and the control plane's host:port it is for."""

    hosts: frozenset[str]
    context: ssl.SSLContext


@dataclass(frozen=True)
class RemoteLayer:
    """Where a registry pull's layer is streamed from (open inside `pull_module` only)."""

    module: str
    client: RegistryClient
    ref: Reference

    async def stream(self, desc: Descriptor, consume: Callable[[Pipe], T]) -> T:
        """`consume(pipe)` in a worker thread while the layer `desc` streams into `pipe`.

        FetchFailed when the registry cannot be reached or cuts the stream.
        """
        try:
            return await stream_blob(self.client, self.ref, desc, consume)
        except StreamFailed as exc:
            raise FetchFailed(self.module, f"cannot fetch {self.ref}: {exc}") from exc

    async def recheck(self, desc: Descriptor, scratch: Path) -> None:
        """Fetch the layer whole into `scratch` (then deleted) checking its digest, to tell a
        damaged or altered copy in the registry (Rejected) from a layer that is bad as signed
        (no error; nor when the registry cannot be reached now: the first refusal stands)."""
        tmp = scratch / f".recheck-{desc.digest.removeprefix('sha256:')}"
        try:
            with _fetch_errors(self.module, str(self.ref)):
                await self.client.fetch_blob(self.ref, desc, tmp)
        except FetchFailed:
            return
        finally:
            tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Pulled:
    """A staged artifact: the layout holding it and the manifest digest the source gave."""

    layout: OciLayout
    digest: str
    source: str
    remote: RemoteLayer | None = None
    """For registry pulls: the layer is not in `layout`, it is streamed from here."""


def node_tls(state_dir: Path) -> NodeTls | None:
    """The node's client context for the control plane's registry; None before enrollment."""
    credentials = StateDir(state_dir).credentials()
    if credentials is None:
        return None
    context = tls.mutual_context(
        credentials.ca_pem,
        credentials.cert_pem,
        credentials.chain_pem,
        credentials.key_path,
        scratch=state_dir,
    )
    hosts = frozenset(urlsplit(url).netloc for url in credentials.seed.urls)
    return NodeTls(hosts, context)


@contextlib.asynccontextmanager
async def pull_module(
    module: ModuleRequest, dest: Path, *, insecure: bool = False, node: NodeTls | None = None
) -> AsyncIterator[Pulled]:
    """Stage `module`'s artifact and signatures in a new layout at `dest` (see the module
    docstring); a registry's connection stays open inside the context."""
    if module.reference.startswith(LAYOUT_PREFIX):
        with _fetch_errors(module.name, module.reference):
            pulled = _copy_from_layout(module, dest)
        yield pulled
        return
    with _fetch_errors(module.name, module.reference):
        ref = parse_reference(module.reference, insecure=insecure)
    verify: bool | ssl.SSLContext = True
    if node is not None and ref.registry in node.hosts and not ref.insecure:
        verify = node.context
    async with _client(verify) as client:
        with _fetch_errors(module.name, module.reference):
            pulled = await _pull_from_registry(module, client, ref, dest)
        yield pulled


@contextlib.contextmanager
def _fetch_errors(module: str, reference: str) -> Iterator[None]:
    """Fetch errors as the apply reports them: damaged (Rejected), else FetchFailed."""
    try:
        yield
    except DigestMismatch as exc:
        raise Rejected(module, f"{reference} is damaged or altered: {exc.detail}") from exc
    except PowernodeError as exc:
        raise FetchFailed(module, f"cannot fetch {reference}: {exc.detail}") from exc
    except OSError as exc:
        raise FetchFailed(module, f"cannot stage {reference}: {exc}") from exc


async def _pull_from_registry(
    module: ModuleRequest, client: RegistryClient, ref: Reference, dest: Path
) -> Pulled:
    """The manifest (and what it names but its layers), its referrers and the `.sig` tag."""
    layout = OciLayout.create(dest)
    data, desc = await client.get_manifest(ref)
    where = f"manifest {desc.digest} of {ref.where}"
    doc = parse_manifest(data, where=where)
    children, is_index = manifest_children(doc, where=where)
    layers = doc.get("layers")
    streamed = {d.get("digest") for d in layers if isinstance(d, dict)} if layers else set()
    for child in [] if is_index else children:
        if child.digest not in streamed and not layout.has_blob(child.digest):
            tmp = layout.new_blob_file()
            try:
                await client.fetch_blob(ref, child, tmp)
                layout.commit_blob(tmp, child.digest)
            finally:
                tmp.unlink(missing_ok=True)
    layout.add_manifest(data, desc.media_type, tag=ref.tag, artifact_type=desc.artifact_type)
    for referrer in await client.referrers(ref, desc.digest):
        await client.pull(ref.with_digest(referrer.digest), dest, referrers=False)
    sig_ref = ref.with_tag(signature_tag(desc.digest))
    with contextlib.suppress(NotFound):  # no cosign tag flavour: referrers may hold them
        await client.pull(sig_ref, dest, referrers=False)
    return Pulled(layout, desc.digest, str(ref), RemoteLayer(module.name, client, ref))


def _client(verify: bool | ssl.SSLContext) -> RegistryClient:
    # httpx takes an SSLContext for `verify` (its way to present a client certificate);
    # RegistryClient's annotation says `bool | str` until its owner widens it.
    return RegistryClient(verify=verify)


def _copy_from_layout(module: ModuleRequest, dest: Path) -> Pulled:
    directory, _, tag = module.reference[len(LAYOUT_PREFIX) :].partition(":")
    source = OciLayout.open(Path(directory))
    root = source.resolve(tag or module.digest)
    target = OciLayout.create(dest)
    manifest = _copy_manifest(source, target, root.digest)
    target.add_manifest(
        manifest, root.media_type, tag=tag or None, artifact_type=root.artifact_type
    )
    sig_tag = signature_tag(root.digest)
    for desc in source.manifests():
        tagged = desc.annotations.get("org.opencontainers.image.ref.name")
        if desc.digest == root.digest or (tagged is not None and tagged != sig_tag):
            continue
        data = source.read_blob(desc.digest)
        subject = parse_manifest(data, where=f"manifest {desc.digest}").get("subject")
        is_referrer = isinstance(subject, dict) and subject.get("digest") == root.digest
        if tagged != sig_tag and not is_referrer:
            continue
        _copy_manifest(source, target, desc.digest)
        target.add_manifest(data, desc.media_type, tag=tagged, artifact_type=desc.artifact_type)
    return Pulled(target, root.digest, module.reference)


def _copy_manifest(source: OciLayout, target: OciLayout, digest: str) -> bytes:
    """Copy a manifest and its blobs, each checked against its digest; the manifest's bytes."""
    where = f"manifest {digest} in {source.root}"
    try:
        data = source.read_blob(digest)
    except Invalid as exc:  # only "larger than" and "does not match its digest"
        raise DigestMismatch(exc.detail) from exc
    children, is_index = manifest_children(parse_manifest(data, where=where), where=where)
    if is_index:
        raise Invalid(f"{where} is an index, not a module or signature manifest")
    for child in children:
        with source.open_blob(child.digest) as blob:
            try:
                target.put_blob_stream(blob, child)
            except Invalid as exc:
                raise DigestMismatch(f"{exc.detail} in {source.root}") from exc
    target.put_blob_bytes(data)
    return data
