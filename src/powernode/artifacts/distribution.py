"""The OCI Distribution protocol, client side (httpx, async): blobs, manifests, referrers.

`powernode.artifacts.registry` builds pushing and pulling whole artifacts on it.

Contracts:
- Nothing large is held in memory: blobs stream from and to files in 1 MiB pieces (file I/O is
  done inline), chunked uploads hold one chunk. Manifests are capped at 4 MiB.
- Everything fetched is verified against the digest it was asked by (and the size, while
  streaming); a mismatch is `DigestMismatch` and nothing unverified lands in a layout.
- Authentication follows the registry's challenge: anonymous first, then `Basic` with the
  registry's credentials or a `Bearer` token from the challenge's realm (with basic
  credentials when there are some). Tokens are kept per repository for the client's life.
- Failures are `powernode.errors` categories naming the registry, repository and operation.
- Registries without the referrers API (distribution 2.8 and older answer 404) are served by
  the referrers tag schema: an OCI index tagged `sha256-<hex of the subject>`. Updating that
  tag is read-modify-write: two concurrent pushers of referrers can lose one of them.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import httpx

from powernode import __version__
from powernode.artifacts import media
from powernode.artifacts.auth import Credentials, RegistryAuth
from powernode.artifacts.oci import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    annotations_of,
    artifact_type_of,
    canonical_json,
    digest_hex,
    index_descriptors,
    media_type_of,
    parse_manifest,
    sha256_digest,
)
from powernode.artifacts.reference import Reference
from powernode.artifacts.transport import (
    CHUNK,
    Body,
    DigestMismatch,
    location,
    read_capped,
    registry_error,
)
from powernode.errors import Invalid, NotFound, Unavailable

__all__ = ["BlobOutcome", "Body", "DigestMismatch", "DistributionClient", "referrers_tag"]
_ACCEPT = ", ".join(sorted(media.MANIFEST_MEDIA_TYPES))
BlobOutcome = Literal["existing", "mounted", "uploaded"]


class DistributionClient:
    """One client for any number of registries; `credentials` maps a registry to its login.

    `chunk_size`: blobs larger than this are uploaded in chunks of this size (PATCH with
    Content-Range); None uploads every blob in one PUT.
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, Credentials] | None = None,
        chunk_size: int | None = None,
        timeout: float = 300.0,
        verify: bool | str | ssl.SSLContext = True,
    ) -> None:
        # identity: a blob's bytes must arrive as stored, or its digest cannot be checked
        headers = {"Accept-Encoding": "identity", "User-Agent": f"powernode/{__version__}"}
        self.http = httpx.AsyncClient(timeout=timeout, verify=verify, headers=headers)
        self.auth = RegistryAuth(self.http, credentials or {})
        self.chunk_size = chunk_size

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # transport

    async def request(
        self,
        method: str,
        ref: Reference,
        url: str | httpx.URL,
        *,
        what: str,
        ok: tuple[int, ...],
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send with authentication; a status outside `ok` becomes the matching domain error.

        With `stream`, the caller reads and closes the response.
        """
        for attempt in range(2):
            send_headers = {**(headers or {}), **self.auth.headers(ref.registry, ref.repository)}
            if body is not None:
                send_headers["Content-Length"] = str(body.size)
            request = self.http.build_request(
                method,
                ref.base_url + url if isinstance(url, str) else url,
                headers=send_headers,
                params=params,
                content=body.content() if body is not None else None,
            )
            try:
                response = await self.http.send(
                    request, stream=True, follow_redirects=method in ("GET", "HEAD")
                )
            except httpx.TransportError as exc:
                raise Unavailable(
                    f"cannot reach registry {ref.registry} while {what}: {exc}"
                ) from exc
            if response.status_code == 401 and attempt == 0:
                await response.aread()
                await response.aclose()
                challenge = response.headers.get("www-authenticate", "")
                if await self.auth.answer(ref.registry, ref.repository, challenge, what):
                    continue
                raise registry_error(response, ref, what)
            if response.status_code in ok:
                if not stream:
                    await response.aread()
                    await response.aclose()
                return response
            await response.aread()
            await response.aclose()
            raise registry_error(response, ref, what)
        raise AssertionError("unreachable")

    # blobs

    async def blob_size(self, ref: Reference, digest: str) -> int | None:
        """The size of a blob in `ref`'s repository, or None when it is not there."""
        response = await self.request(
            "HEAD",
            ref,
            f"/v2/{ref.repository}/blobs/{digest}",
            what=f"checking blob {digest}",
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        return int(response.headers.get("content-length", "-1"))

    async def upload_blob(
        self, ref: Reference, desc: Descriptor, body: Body, *, mount_from: tuple[str, ...] = ()
    ) -> BlobOutcome:
        """Put a blob unless it is there; returns `existing`, `mounted` or `uploaded`.

        Each repository of `mount_from` (same registry) is asked in turn to lend the blob; a
        registry answering a mount with 202 has started an upload instead: the last such
        session is used for the upload, the others are cancelled.
        """
        if body.size != desc.size:
            raise Invalid(f"blob {desc.digest} has {body.size} bytes, not {desc.size}")
        if await self.blob_size(ref, desc.digest) == desc.size:
            return "existing"
        uploads = f"/v2/{ref.repository}/blobs/uploads/"
        start: httpx.Response | None = None
        for source in mount_from:
            if start is not None:  # the previous source lacked it: drop that upload session
                await self._cancel(ref, location(start, ref, "the upload"))
            start = await self.request(
                "POST",
                ref,
                uploads,
                what=f"mounting blob {desc.digest} from {source}",
                ok=(201, 202),
                params={"mount": desc.digest, "from": source},
                body=Body(),
            )
            if start.status_code == 201:
                return "mounted"
        if start is None:
            start = await self.request(
                "POST",
                ref,
                uploads,
                what=f"starting upload of {desc.digest}",
                ok=(202,),
                body=Body(),
            )
        url = location(start, ref, "the upload")
        what = f"uploading blob {desc.digest}"
        if self.chunk_size is not None and desc.size > self.chunk_size:
            chunk = max(self.chunk_size, int(start.headers.get("oci-chunk-min-length", "0")))
            url = await self._upload_chunks(ref, url, body, chunk, what)
            body = Body()
        octet = {"Content-Type": "application/octet-stream"}
        done = await self.request(
            "PUT",
            ref,
            url.copy_merge_params({"digest": desc.digest}),
            what=what,
            ok=(201,),
            headers=octet,
            body=body,
        )
        echoed = done.headers.get("docker-content-digest")
        if echoed is not None and echoed != desc.digest:
            raise DigestMismatch(f"{ref.where} stored {echoed} when {what}")
        return "uploaded"

    async def _cancel(self, ref: Reference, url: httpx.URL) -> None:
        what = "cancelling an unused upload"
        await self.request("DELETE", ref, url, what=what, ok=(202, 204, 404))

    async def _upload_chunks(
        self, ref: Reference, url: httpx.URL, body: Body, chunk: int, what: str
    ) -> httpx.URL:
        offset = 0
        while offset < body.size:
            length = min(chunk, body.size - offset)
            piece = body.part(offset, length)
            response = await self.request(
                "PATCH",
                ref,
                url,
                what=f"{what} (bytes {offset}-{offset + length - 1})",
                ok=(202,),
                body=piece,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + length - 1}",
                },
            )
            url = location(response, ref, "the upload")
            offset += length
        return url

    async def fetch_blob(self, ref: Reference, desc: Descriptor, dest: Path) -> None:
        """Stream a blob into the file `dest`, checking its size and digest as it comes."""
        what = f"fetching blob {desc.digest}"
        response = await self.request(
            "GET",
            ref,
            f"/v2/{ref.repository}/blobs/{desc.digest}",
            what=what,
            ok=(200,),
            stream=True,
        )
        sha, size = hashlib.sha256(), 0
        try:
            with dest.open("wb") as out:
                async for piece in response.aiter_raw(CHUNK):
                    size += len(piece)
                    if size > desc.size:
                        raise DigestMismatch(
                            f"{ref.where} sent more than the {desc.size} bytes of {desc.digest}"
                        )
                    sha.update(piece)
                    out.write(piece)
        except httpx.TransportError as exc:
            raise Unavailable(f"registry {ref.registry} broke off {what}: {exc}") from exc
        finally:
            await response.aclose()
        if size != desc.size or "sha256:" + sha.hexdigest() != desc.digest:
            raise DigestMismatch(
                f"{ref.where} sent {size} bytes with digest sha256:{sha.hexdigest()} for blob "
                f"{desc.digest} ({desc.size} bytes): the registry's copy is damaged or altered"
            )

    # manifests

    async def get_manifest(self, ref: Reference) -> tuple[bytes, Descriptor]:
        """A manifest by tag or digest, checked against the digest asked for or announced."""
        what = f"fetching manifest {ref.identifier}"
        response = await self.request(
            "GET",
            ref,
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            what=what,
            ok=(200,),
            headers={"Accept": _ACCEPT},
            stream=True,
        )
        body = await read_capped(response, MAX_MANIFEST_SIZE, f"{what} on {ref.where}")
        digest = sha256_digest(body)
        expected = ref.digest or response.headers.get("docker-content-digest")
        if expected is not None and expected != digest:
            raise DigestMismatch(
                f"{ref.where} returned a manifest with digest {digest} for {ref.identifier} "
                f"(expected {expected})"
            )
        doc = parse_manifest(body, where=f"manifest {ref.identifier} of {ref.where}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        media_type = media_type_of(doc, content_type or media.OCI_MANIFEST)
        return body, Descriptor(
            media_type, digest, len(body), artifact_type=artifact_type_of(doc, fallback=False)
        )

    async def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> Descriptor:
        """Put a manifest by `ref`'s tag (or by its own digest); keeps referrers findable."""
        digest = sha256_digest(data)
        doc = parse_manifest(data, where="the manifest to push")
        target = ref.tag if ref.tag is not None else digest
        what = f"pushing manifest {digest} as {target}"
        response = await self.request(
            "PUT",
            ref,
            f"/v2/{ref.repository}/manifests/{target}",
            what=what,
            ok=(201,),
            headers={"Content-Type": media_type},
            body=Body(data=data),
        )
        echoed = response.headers.get("docker-content-digest")
        if echoed is not None and echoed != digest:
            raise DigestMismatch(f"{ref.where} stored {echoed} when {what}")
        desc = Descriptor(
            media_type, digest, len(data), artifact_type=artifact_type_of(doc, fallback=False)
        )
        subject = doc.get("subject")
        if isinstance(subject, dict) and "oci-subject" not in response.headers:
            referrer = Descriptor(
                media_type, digest, len(data), annotations_of(doc), artifact_type_of(doc)
            )
            await self._add_to_referrers_tag(ref, Descriptor.parse(subject).digest, referrer)
        return desc

    # referrers

    async def referrers(
        self, ref: Reference, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose `subject` is `digest`: the referrers API, else the tag schema."""
        params = {"artifactType": artifact_type} if artifact_type else None
        response = await self.request(
            "GET",
            ref,
            f"/v2/{ref.repository}/referrers/{digest}",
            what=f"listing referrers of {digest}",
            ok=(200, 400, 404, 405),
            params=params,
            headers={"Accept": media.OCI_INDEX},
            stream=True,
        )
        where = f"referrers of {digest} on {ref.where}"
        data = await read_capped(response, MAX_MANIFEST_SIZE, where)
        if response.status_code == 200:
            found = index_descriptors(data, where)
        else:
            found = await self._referrers_tag(ref, digest)
        if artifact_type is not None:
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    async def _referrers_tag(self, ref: Reference, digest: str) -> list[Descriptor]:
        try:
            data, _ = await self.get_manifest(ref.with_tag(referrers_tag(digest)))
        except NotFound:
            return []
        return index_descriptors(data, f"referrers tag of {digest} on {ref.where}")

    async def _add_to_referrers_tag(
        self, ref: Reference, subject: str, referrer: Descriptor
    ) -> None:
        current = await self._referrers_tag(ref, subject)
        if any(d.digest == referrer.digest for d in current):
            return
        index = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": media.OCI_INDEX,
                "manifests": [d.document() for d in [*current, referrer]],
            }
        )
        await self.put_manifest(ref.with_tag(referrers_tag(subject)), index, media.OCI_INDEX)


def referrers_tag(digest: str) -> str:
    """The tag the referrers tag schema keeps `digest`'s referrers under: `sha256-<hex>`."""
    return "sha256-" + digest_hex(digest)
