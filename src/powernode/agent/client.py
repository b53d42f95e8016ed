"""An async client for the node API (docs/node-protocol.md, "Node API"), over mutual TLS.

Failover: a call tries the seed's URLs in order, starting with the one that last answered; a
connection error, a timeout, 429 or a 5xx moves on to the next URL. When a whole round fails
the call sleeps (exponential backoff with full jitter, `backoff.Backoff`) and starts another
round, up to `rounds` rounds (None: until it succeeds or is cancelled), then raises Unreachable.
A 4xx is never retried: its problem document becomes a typed error (`errors.api_error`).

Concurrency contract: one NodeClient is shared by the agent's loops. `use_tls()` swaps the
underlying HTTP client (after enrollment or renewal); calls already in flight finish on the old
one, which is closed at the next swap or at `aclose()`; the next attempt of any call uses the new
one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

# httpx imports its optional command line, and with it rich, click and pygments (several MB, and
# part of the server's stack), whenever they are installed; the agent never uses it. A None entry
# in sys.modules makes that import fail, and httpx falls back to a stub `main`.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx

from powernode.agent.backoff import Backoff
from powernode.agent.errors import ProtocolViolation, Unreachable, api_error

log = logging.getLogger(__name__)

PREFIX = "/node/v1"
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 15.0
"""Read timeout of an ordinary call; a lease long-poll adds its wait_s to it."""
RETRY_STATUSES = frozenset({429})

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Enrollment:
    """The answer to enroll: the node's first certificate."""

    node_id: str
    certificate: str
    chain: str
    ca: str
    not_after: str
    heartbeat_interval_s: float


@dataclass(frozen=True)
class Heartbeat:
    """The answer to a heartbeat: when to send the next one."""

    interval_s: float
    grace_s: float


@dataclass(frozen=True)
class Lease:
    """A leased task; `epoch` fences progress and completion against newer leases."""

    id: str
    kind: str
    payload: dict[str, Any]
    epoch: int
    attempt: int
    lease_expires_at: str
    visibility_timeout_s: float


@dataclass(frozen=True)
class Issued:
    """The answer to a renewal: the new certificate."""

    certificate: str
    chain: str
    ca: str
    not_after: str


class NodeClient:
    """The node API at `urls`, with failover and backoff; see the module docstring."""

    def __init__(
        self,
        urls: Sequence[str],
        tls: ssl.SSLContext,
        *,
        rounds: int | None = None,
        user_agent: str = "powernode-agent",
        backoff: Callable[[], Backoff] = Backoff,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not urls:
            raise ValueError("NodeClient needs at least one URL")
        self.urls = tuple(u.rstrip("/") for u in urls)
        self.rounds = rounds
        self._user_agent = user_agent
        self._backoff = backoff
        self._sleep = sleep
        self._current = 0
        self._http = self._new_http(tls)
        self._retired: list[httpx.AsyncClient] = []

    def _new_http(self, tls: ssl.SSLContext) -> httpx.AsyncClient:
        # trust_env=False: proxy and CA variables of the host must not redirect node traffic.
        return httpx.AsyncClient(
            verify=tls,
            trust_env=False,
            headers={"user-agent": self._user_agent, "accept": "application/json"},
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    async def use_tls(self, tls: ssl.SSLContext, urls: Sequence[str] | None = None) -> None:
        """Use `tls` (a new client certificate), and `urls` if given, from the next attempt on."""
        old, self._http = self._http, self._new_http(tls)
        if urls:
            self.urls, self._current = tuple(u.rstrip("/") for u in urls), 0
        for retired in self._retired:
            await retired.aclose()
        self._retired = [old]

    async def aclose(self) -> None:
        """Close every connection."""
        for http in [self._http, *self._retired]:
            await http.aclose()
        self._retired = []

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def enroll(
        self, token: str, csr: str, identity: dict[str, Any], node_id: str | None = None
    ) -> Enrollment:
        """Trade a bootstrap token and a CSR for a certificate (no client certificate needed).

        `node_id` (from the seed) lets the server refuse a token issued for another node."""
        body: dict[str, Any] = {"token": token, "csr": csr, "identity": identity}
        if node_id is not None:
            body["node_id"] = node_id
        doc = _object(await self._post("/enroll", body, enrolling=True))
        return Enrollment(
            node_id=_str(doc, "node_id"),
            certificate=_str(doc, "certificate"),
            chain=_str(doc, "chain"),
            ca=_str(doc, "ca"),
            not_after=_str(doc, "not_after"),
            heartbeat_interval_s=_number(doc, "heartbeat_interval_s"),
        )

    async def heartbeat(self, agent_version: str, status: dict[str, Any]) -> Heartbeat:
        """Report liveness; the answer says when to report next. One round over the URLs, no
        backoff: the heartbeat loop tries again an interval later, so the first beat after an
        outage arrives within one interval (a backoff grown during a control-plane restart
        would keep the node unreachable for up to its cap after the control plane is back)."""
        doc = _object(
            await self._post(
                "/heartbeat", {"agent_version": agent_version, "status": status}, rounds=1
            )
        )
        return Heartbeat(interval_s=_number(doc, "interval_s"), grace_s=_number(doc, "grace_s"))

    async def lease(self, wait_s: int) -> Lease | None:
        """Long-poll for a task for up to `wait_s` seconds; None if none arrived (204)."""
        response = await self._post(
            "/tasks/lease", {"wait_s": wait_s}, read_timeout=REQUEST_TIMEOUT_S + wait_s
        )
        if response.status_code == 204:
            return None
        doc = _object(response)
        payload = doc.get("payload")
        if not isinstance(payload, dict):
            raise ProtocolViolation("lease answer: 'payload' is not an object")
        return Lease(
            id=_str(doc, "id"),
            kind=_str(doc, "kind"),
            payload=payload,
            epoch=_int(doc, "epoch"),
            attempt=_int(doc, "attempt"),
            lease_expires_at=_str(doc, "lease_expires_at"),
            visibility_timeout_s=_number(doc, "visibility_timeout_s"),
        )

    async def progress(
        self, task_id: str, epoch: int, message: str, *, rounds: int | None = None
    ) -> str:
        """Report progress, which extends the lease; the new lease expiry."""
        body = {"epoch": epoch, "message": message}
        doc = _object(await self._post(f"/tasks/{task_id}/progress", body, rounds=rounds))
        return _str(doc, "lease_expires_at")

    async def complete(self, task_id: str, epoch: int, outcome: str, result: dict[str, Any]) -> str:
        """Report the outcome ("succeeded" or "failed") and result; the task's new state."""
        if outcome not in ("succeeded", "failed"):
            raise ValueError(f"outcome must be succeeded or failed, not {outcome!r}")
        body = {"epoch": epoch, "outcome": outcome, "result": result}
        return _str(_object(await self._post(f"/tasks/{task_id}/complete", body)), "state")

    async def renew(self, csr: str, *, rounds: int | None = None) -> Issued:
        """Trade a CSR for a new certificate, authenticated by the current one."""
        doc = _object(await self._post("/certificate", {"csr": csr}, rounds=rounds))
        return Issued(
            certificate=_str(doc, "certificate"),
            chain=_str(doc, "chain"),
            ca=_str(doc, "ca"),
            not_after=_str(doc, "not_after"),
        )

    async def _post(
        self,
        path: str,
        body: dict[str, Any],
        *,
        enrolling: bool = False,
        read_timeout: float | None = None,
        rounds: int | None = None,
    ) -> httpx.Response:
        limit = rounds if rounds is not None else self.rounds
        timeout = httpx.Timeout(read_timeout or REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        backoff = self._backoff()
        done_rounds = 0
        while True:
            last = "no attempt"
            for step in range(len(self.urls)):
                index = (self._current + step) % len(self.urls)
                url = self.urls[index] + PREFIX + path
                try:
                    response = await self._http.post(url, json=body, timeout=timeout)
                except httpx.TransportError as exc:
                    last = f"{url}: {type(exc).__name__}: {exc}"
                    log.debug("node API attempt failed", extra={"url": url, "error": last})
                    continue
                if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
                    last = f"{url}: HTTP {response.status_code}"
                    log.debug("node API attempt failed", extra={"url": url, "error": last})
                    continue
                self._current = index
                if response.status_code >= 400:
                    raise _problem(response, enrolling=enrolling)
                return response
            done_rounds += 1
            if limit is not None and done_rounds >= limit:
                raise Unreachable(f"no control-plane URL answered {path}; last error: {last}")
            delay = backoff.next_delay()
            log.warning(
                "control plane unreachable; retrying",
                extra={"path": path, "error": last, "retry_in_s": round(delay, 2)},
            )
            await self._sleep(delay)


def _problem(response: httpx.Response, *, enrolling: bool) -> Exception:
    title, detail = response.reason_phrase or "Error", ""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        title = str(doc.get("title") or title)
        detail = str(doc.get("detail") or "")
    elif response.text:
        detail = response.text[:500]
    return api_error(response.status_code, title, detail, enrolling=enrolling)


def _object(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError as exc:
        raise ProtocolViolation(f"{response.request.url.path}: answer is not JSON") from exc
    if not isinstance(doc, dict):
        raise ProtocolViolation(f"{response.request.url.path}: answer is not a JSON object")
    return doc


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ProtocolViolation(f"answer field {key!r} is not a string")
    return value


def _int(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation(f"answer field {key!r} is not an integer")
    return value


def _number(doc: dict[str, Any], key: str) -> float:
    value = doc.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolViolation(f"answer field {key!r} is not a number")
    return float(value)
