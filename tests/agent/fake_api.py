"""A small, real node API over HTTPS (stdlib http.server + ssl, in a thread) for agent tests.

It follows docs/node-protocol.md: the TLS layer asks for a client certificate and verifies it
against the root (so the agent must send its intermediate); every path but enroll answers 401
without one. Tasks are queued with `add_task`; the test reads what the agent did from
`heartbeats`, `progress` and `completions`, and can bump a lease's epoch (`steal`), make the
next N requests fail with 503 (`fail_next`) or revoke a certificate serial (`revoked`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.agent.ca import TestPki, pem

LONG_POLL_CAP_S = 2.0
"""The fake holds a lease long-poll at most this long, to keep tests quick."""


@dataclass
class FakeState:
    """Everything the fake knows; guarded by `cond`."""

    pki: TestPki
    node_id: str
    tokens: set[str]
    cert_lifetime: dt.timedelta = dt.timedelta(days=30)
    heartbeat_interval_s: float = 30.0
    visibility_timeout_s: float = 30.0
    cond: threading.Condition = field(default_factory=threading.Condition)
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    epochs: dict[str, int] = field(default_factory=dict)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)
    completions: list[dict[str, Any]] = field(default_factory=list)
    enrollments: list[dict[str, Any]] = field(default_factory=list)
    renewals: int = 0
    issued: list[int] = field(default_factory=list)
    """Serials of the client certificates issued, in order."""
    revoked: set[int] = field(default_factory=set)
    fail_next: int = 0
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.request)
        self.request.do_handshake()

    def finish(self) -> None:
        with self.server.lock:
            self.server.connections.discard(self.request)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, doc: dict[str, Any] | None = None, *, problem: bool = False
    ) -> None:
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        if doc is not None:
            kind = "application/problem+json" if problem else "application/json"
            self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _problem(self, status: int, title: str, detail: str) -> None:
        doc = {"type": "about:blank", "status": status, "title": title, "detail": detail}
        self._send(status, doc, problem=True)

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.removeprefix("/node/v1")
        with state.cond:
            state.requests.append(path)
            if state.fail_next > 0:
                state.fail_next -= 1
                self._problem(503, "Service unavailable", "injected failure")
                return
        if path == "/enroll":
            self._enroll(state, body)
            return
        peer = self.request.getpeercert()
        if not peer:
            self._problem(401, "Unauthorized", "a client certificate is required")
            return
        if int(peer["serialNumber"], 16) in state.revoked:
            self._problem(401, "Unauthorized", "certificate revoked")
            return
        if path == "/heartbeat":
            with state.cond:
                state.heartbeats.append(body)
                state.cond.notify_all()
            self._send(200, {"interval_s": state.heartbeat_interval_s, "grace_s": 60})
        elif path == "/tasks/lease":
            self._lease(state, float(body["wait_s"]))
        elif path == "/certificate":
            cert = state.pki.sign_csr(body["csr"], lifetime=state.cert_lifetime)
            with state.cond:
                state.renewals += 1
                state.cond.notify_all()
            self._send(200, _issued(state, cert))
        elif path.startswith("/tasks/") and path.endswith(("/progress", "/complete")):
            self._task_report(state, path, body)
        else:
            self._problem(404, "Not found", path)

    def _enroll(self, state: FakeState, body: dict[str, Any]) -> None:
        with state.cond:
            if body.get("token") not in state.tokens:
                self._problem(401, "Unauthorized", "bad, reused or expired token")
                return
            state.tokens.discard(body["token"])
            state.enrollments.append(body)
            state.cond.notify_all()
        cert = state.pki.sign_csr(body["csr"], lifetime=state.cert_lifetime)
        self._send(
            201,
            {
                **_issued(state, cert),
                "node_id": state.node_id,
                "heartbeat_interval_s": state.heartbeat_interval_s,
            },
        )

    def _lease(self, state: FakeState, wait_s: float) -> None:
        with state.cond:
            state.cond.wait_for(lambda: bool(state.queue), timeout=min(wait_s, LONG_POLL_CAP_S))
            if not state.queue:
                self._send(204)
                return
            task = state.queue.popleft()
            epoch = state.epochs.get(task["id"], 0) + 1
            state.epochs[task["id"]] = epoch
            state.cond.notify_all()
        self._send(
            200,
            {
                **task,
                "epoch": epoch,
                "attempt": epoch,
                "lease_expires_at": _in(state.visibility_timeout_s),
                "visibility_timeout_s": state.visibility_timeout_s,
            },
        )

    def _task_report(self, state: FakeState, path: str, body: dict[str, Any]) -> None:
        _, _, task_id, what = path.split("/")
        with state.cond:
            if task_id not in state.epochs:
                self._problem(404, "Not found", f"task {task_id} is not this node's")
                return
            if body.get("epoch") != state.epochs[task_id]:
                self._problem(409, "Conflict", f"stale epoch {body.get('epoch')}")
                return
            if what == "progress":
                state.progress.append({"task_id": task_id, **body})
                state.cond.notify_all()
                answer = {"lease_expires_at": _in(state.visibility_timeout_s)}
            else:
                state.completions.append({"task_id": task_id, **body})
                state.cond.notify_all()
                answer = {"state": body["outcome"]}
        self._send(200, answer)


def _in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def _issued(state: FakeState, cert: Any) -> dict[str, Any]:
    with state.cond:
        state.issued.append(cert.serial_number)
    return {
        "certificate": pem(cert),
        "chain": state.pki.intermediate_pem,
        "ca": state.pki.root_pem,
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    state: FakeState

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()

    def drop_connections(self) -> None:
        """Cut every open connection, as a server process that died would."""
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # failed handshakes and dropped connections are part of what tests do


@dataclass
class FakeNodeApi:
    """A running fake; `url` is its base URL, `state` its (lock-guarded) memory."""

    url: str
    state: FakeState

    def add_task(self, kind: str, payload: dict[str, Any]) -> str:
        """Queue a task for the node; its id."""
        task_id = str(uuid.uuid4())
        with self.state.cond:
            self.state.queue.append({"id": task_id, "kind": kind, "payload": payload})
            self.state.cond.notify_all()
        return task_id

    def steal(self, task_id: str) -> None:
        """Bump the task's epoch, as a lease expiry and re-lease elsewhere would."""
        with self.state.cond:
            self.state.epochs[task_id] += 1

    def wait_for(self, what: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Block until `what` (heartbeats, progress, completions) has `count` entries."""
        with self.state.cond:
            if not self.state.cond.wait_for(
                lambda: len(getattr(self.state, what)) >= count, timeout=timeout
            ):
                raise AssertionError(
                    f"no {count} {what} within {timeout} s: {getattr(self.state, what)}"
                )
            return list(getattr(self.state, what))

    def wait_until(self, predicate: Callable[[FakeState], bool], timeout: float = 20.0) -> None:
        """Block until `predicate(state)` holds (checked whenever the fake records something)."""
        with self.state.cond:
            if not self.state.cond.wait_for(lambda: predicate(self.state), timeout=timeout):
                raise AssertionError(f"condition not met within {timeout} s")

    def seed(self, token: str, *, urls: list[str] | None = None) -> dict[str, Any]:
        """A seed document for this fake's node."""
        return {
            "version": 1,
            "node_id": self.state.node_id,
            "token": token,
            "urls": urls or [self.url],
            "ca": self.state.pki.root_pem,
        }


@contextmanager
def serve(
    pki: TestPki,
    workdir: Path,
    *,
    tokens: set[str],
    port: int = 0,
    state: FakeState | None = None,
    **settings: Any,
) -> Iterator[FakeNodeApi]:
    """Run a fake node API on 127.0.0.1 (a free port by default) until the block ends.

    Pass the `state` of an earlier fake (and its port) to restart it with the same memory.
    """
    chain, key = pki.write_server_files(workdir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    context.load_verify_locations(cadata=pki.root_pem)
    context.verify_mode = ssl.CERT_OPTIONAL
    server = _Server(("127.0.0.1", port))
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    server.state = state or FakeState(
        pki=pki, node_id=str(uuid.uuid4()), tokens=set(tokens), **settings
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield FakeNodeApi(f"https://127.0.0.1:{server.server_address[1]}", server.state)
    finally:
        server.shutdown()
        server.server_close()
        server.drop_connections()
        thread.join(timeout=5)
