"""The agent's current credentials and node API client, shared by its loops.

Concurrency contract: only the renewal loop calls `install()`. Any loop whose call is refused
for the certificate (401/403) calls `reject()` and then waits in `wait_changed()`; the renewal
loop sees `rejected`, re-enrolls and installs, which wakes every waiter.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from powernode.agent import tls
from powernode.agent.client import NodeClient
from powernode.agent.errors import CertificateRejected
from powernode.agent.state import Credentials

log = logging.getLogger(__name__)


def mutual_tls(credentials: Credentials) -> ssl.SSLContext:
    """The TLS context that presents `credentials`."""
    return tls.mutual_context(
        credentials.ca_pem,
        credentials.cert_pem,
        credentials.chain_pem,
        credentials.key_path,
        scratch=credentials.key_path.parent,
    )


class Session:
    """Credentials in use, the client that presents them, and the re-enrollment signal."""

    def __init__(self, client: NodeClient, credentials: Credentials) -> None:
        self.client = client
        self.credentials = credentials
        self.rejected = asyncio.Event()
        self._changed = asyncio.Event()

    @classmethod
    def open(cls, credentials: Credentials, *, rounds: int | None, user_agent: str) -> Session:
        """A session with a new client presenting `credentials`."""
        client = NodeClient(
            credentials.seed.urls, mutual_tls(credentials), rounds=rounds, user_agent=user_agent
        )
        return cls(client, credentials)

    def reject(self, exc: CertificateRejected) -> None:
        """Report that the server refused the certificate: the node must enroll again."""
        if not self.rejected.is_set():
            log.error(
                "the control plane refused this node's certificate; re-enrolling",
                extra={"status": exc.status, "error": str(exc)},
            )
        self.rejected.set()

    async def wait_changed(self) -> None:
        """Return once new credentials are installed."""
        await self._changed.wait()

    async def install(self, credentials: Credentials) -> None:
        """Present `credentials` from the next call on and wake the waiters."""
        await self.client.use_tls(mutual_tls(credentials), credentials.seed.urls)
        self.credentials = credentials
        self.rejected.clear()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
