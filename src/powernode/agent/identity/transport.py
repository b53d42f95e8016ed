"""A small HTTP client for metadata services: bounded, time-limited, never proxied.

`http.client` directly rather than `urllib.request`: metadata services are link-local and must be
reached without the environment's proxies (Azure IMDS refuses proxied requests) and without
following redirects. Every failure to get a response is a `SourceSkipped`, so a source gives up
with a reason instead of crashing discovery. Responses of any status are returned; the caller
decides what 403 or 404 means on its platform.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from powernode.agent.identity.base import SourceSkipped

RETRY_STATUSES = frozenset({503})
BACKOFF_S = 0.1  # doubled after each retry
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Response:
    """A complete response; `headers` keys are lower-case."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def ok(self) -> Response:
        """This response if its status is 2xx; otherwise `SourceSkipped` naming the status."""
        if not 200 <= self.status < 300:
            raise SourceSkipped(f"{self.url} answered HTTP {self.status}")
        return self

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; otherwise `SourceSkipped`."""
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise SourceSkipped(f"{self.url} did not answer JSON ({exc})") from None
        if not isinstance(value, dict):
            raise SourceSkipped(f"{self.url} answered {type(value).__name__}, not a JSON object")
        return value


def request(
    method: str,
    url: str,
    *,
    timeout_s: float,
    limit: int,
    headers: Mapping[str, str] | None = None,
    tries: int = 1,
) -> Response:
    """Send one request (retried on 503 up to `tries` times) and read at most `limit` bytes.

    `timeout_s` bounds connecting and each read, and the whole body must arrive within it.
    """
    for attempt in range(1, tries + 1):
        response = _once(method, url, headers or {}, timeout_s, limit)
        if response.status not in RETRY_STATUSES or attempt == tries:
            return response
        time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable: tries must be at least 1")


def _once(
    method: str, url: str, headers: Mapping[str, str], timeout_s: float, limit: int
) -> Response:
    parts = urlsplit(url)
    connection_class = {
        "http": http.client.HTTPConnection,
        "https": http.client.HTTPSConnection,
    }.get(parts.scheme)
    if connection_class is None or not parts.hostname:
        raise SourceSkipped(f"{url}: not an http(s) URL")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection = connection_class(parts.hostname, parts.port, timeout=timeout_s)
    except ValueError as exc:  # a malformed port
        raise SourceSkipped(f"{url}: {exc}") from None
    try:
        # A PUT without a body still needs Content-Length: 0 (AWS IMDS answers 411 otherwise).
        body = b"" if method in {"PUT", "POST"} else None
        connection.request(method, target, body=body, headers=dict(headers))
        reply = connection.getresponse()
        declared = reply.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise SourceSkipped(f"{url}: response of {declared} bytes exceeds {limit}")
        deadline = time.monotonic() + timeout_s
        chunks: list[bytes] = []
        size = 0
        while chunk := reply.read1(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise SourceSkipped(f"{url}: response exceeds {limit} bytes")
            if time.monotonic() > deadline:
                raise SourceSkipped(f"{url}: response not complete within {timeout_s} s")
            chunks.append(chunk)
        return Response(
            url=url,
            status=reply.status,
            headers={key.lower(): value for key, value in reply.getheaders()},
            body=b"".join(chunks),
        )
    except (OSError, http.client.HTTPException) as exc:
        raise SourceSkipped(f"{method} {url}: {_describe(exc)}") from None
    finally:
        connection.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
