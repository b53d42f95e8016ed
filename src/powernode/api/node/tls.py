"""Hand the client certificate of a TLS connection to the ASGI app.

uvicorn does not expose the peer certificate, so the node API's listener uses a protocol class
that reads it from the connection's SSL object once, at connection time, and puts it into every
request's scope as `scope["extensions"]["tls"]["client_cert_der"]` (the shape of the ASGI TLS
extension). The handshake itself already verified the chain against our CA.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Fast
except ImportError:  # pragma: no cover - httptools is optional for uvicorn
    _Fast = H11Protocol  # type: ignore[assignment,misc]


def _with_peer_certificate(app: Any, der: bytes | None) -> Any:
    async def tls_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = {"client_cert_der": der}
            scope = {**scope, "extensions": extensions}
        await app(scope, receive, send)

    return tls_app


class PeerCertificateProtocol(_Fast):
    """uvicorn's HTTP protocol, plus the peer certificate in each request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self.app = _with_peer_certificate(self.app, der)
        super().connection_made(transport)


def peer_certificate(scope: Any) -> bytes | None:
    tls = (scope.get("extensions") or {}).get("tls") or {}
    der = tls.get("client_cert_der")
    return der if isinstance(der, bytes) else None
