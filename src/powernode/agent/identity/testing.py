"""Fakes for testing identity discovery: DMI trees, seeds and real metadata servers.

Each fake is a real HTTP server on 127.0.0.1 (a thread of its own, started by `with`), speaking
its provider's protocol closely enough to prove the agent sends what the provider requires: a
request without the required header gets the provider's own refusal (AWS 401, GCP 403, Azure
400). Every request is recorded in `requests`, so a test can also prove that none arrived.

    with FakeAws(user_data=seed_bytes()) as aws:
        discover(DiscoveryConfig(sysfs_root=write_dmi(tmp_path, **DMI["aws"]),
                                 endpoints={"aws": aws.url}))
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

DMI: dict[str, dict[str, str]] = {
    "qemu": {"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)"},
    "aws": {"sys_vendor": "Amazon EC2", "product_name": "m5.large", "bios_vendor": "Amazon EC2"},
    "gcp": {
        "sys_vendor": "Google",
        "product_name": "Google Compute Engine",
        "bios_vendor": "Google",
    },
    "azure": {
        "sys_vendor": "Microsoft Corporation",
        "product_name": "Virtual Machine",
        "chassis_asset_tag": "7783-7084-3265-9085-8269-3286-77",
    },
    "digitalocean": {"sys_vendor": "DigitalOcean", "product_name": "Droplet"},
    "openstack": {"sys_vendor": "OpenStack Foundation", "product_name": "OpenStack Nova"},
    "bare_metal": {"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R650"},
}
"""DMI fields as each platform's firmware reports them."""

TEST_CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write_dmi(sysfs_root: Path, **fields: str) -> Path:
    """Write DMI fields under `sysfs_root/class/dmi/id` as the kernel does; returns the root."""
    dmi = sysfs_root / "class" / "dmi" / "id"
    dmi.mkdir(parents=True, exist_ok=True)
    for name, value in fields.items():
        (dmi / name).write_text(value + "\n")
    return sysfs_root


def write_fw_cfg(sysfs_root: Path, data: bytes) -> Path:
    """Write the `opt/powernode/seed` fw_cfg entry as the qemu_fw_cfg driver exposes it."""
    entry = sysfs_root / "firmware" / "qemu_fw_cfg" / "by_name" / "opt" / "powernode" / "seed"
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "raw").write_bytes(data)
    return sysfs_root


def make_seed(**overrides: Any) -> dict[str, Any]:
    """A valid seed; keyword arguments replace fields."""
    seed: dict[str, Any] = {
        "version": 1,
        "node_id": "0190f3c1-7b2a-7c3d-8e4f-5a6b7c8d9e0f",
        "token": "abcdef.0123456789abcdef",
        "urls": ["https://127.0.0.1:8443", "https://10.0.0.2:8443"],
        "ca": TEST_CA,
    }
    seed.update(overrides)
    return seed


def seed_bytes(**overrides: Any) -> bytes:
    """`make_seed(**overrides)` as JSON bytes."""
    return json.dumps(make_seed(**overrides)).encode()


@dataclass(frozen=True)
class Recorded:
    """One request a fake received; `headers` keys are lower-case, `path` includes the query."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Reply:
    """What a fake answers."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, value: Any, **headers: str) -> Reply:
        return cls(200, json.dumps(value).encode(), {"Content-Type": "application/json", **headers})


class FakeServer:
    """A recording HTTP server that answers 404 to everything; providers override `respond`.

    Thread-safety: `respond` runs on the server's request threads; `requests` is appended under a
    lock and is safe to read once the request that matters has been answered.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def respond(self, request: Recorded) -> Reply:
        """The answer to `request`."""
        return Reply(404)

    @property
    def url(self) -> str:
        """The base URL, `http://127.0.0.1:<port>`."""
        assert self._server is not None, "use the fake in a with block"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def paths(self) -> list[str]:
        """The paths (with query) requested so far, in order."""
        with self._lock:
            return [r.path for r in self.requests]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        request = Recorded(
            handler.command, handler.path, {k.lower(): v for k, v in handler.headers.items()}
        )
        with self._lock:
            self.requests.append(request)
        reply = self.respond(request)
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)

    def __enter__(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            def do_PUT(self) -> None:
                fake._handle(self)

            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


class FakeAws(FakeServer):
    """EC2 IMDSv2. `unavailable` first requests answer 503; `disabled` answers 403 to all."""

    def __init__(
        self, user_data: bytes | None = None, *, disabled: bool = False, unavailable: int = 0
    ) -> None:
        super().__init__()
        self.user_data = user_data
        self.disabled = disabled
        self.unavailable = unavailable
        self.token = secrets.token_urlsafe(16)
        self.document = {
            "instanceId": "i-0123456789abcdef0",
            "region": "eu-central-1",
            "availabilityZone": "eu-central-1a",
            "instanceType": "m5.large",
            "accountId": "123456789012",
        }

    def respond(self, request: Recorded) -> Reply:
        if self.disabled:
            return Reply(403)
        if self.unavailable > 0:
            self.unavailable -= 1
            return Reply(503)
        if request.path == "/latest/api/token":
            if request.method != "PUT":
                return Reply(405)
            if "x-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
                return Reply(400)
            return Reply(200, self.token.encode())
        if request.headers.get("x-aws-ec2-metadata-token") != self.token:
            return Reply(401)
        if request.path == "/latest/dynamic/instance-identity/document":
            return Reply.json(self.document)
        if request.path == "/latest/user-data" and self.user_data is not None:
            return Reply(200, self.user_data)
        return Reply(404)


class FakeGcp(FakeServer):
    """The Compute Engine metadata server; `flavor=False` drops the response header."""

    def __init__(self, seed: bytes | None = None, *, flavor: bool = True) -> None:
        super().__init__()
        self.seed = seed
        self.flavor = flavor
        self.instance: dict[str, Any] = {
            "id": 4520031799277581759,
            "hostname": "node-1.europe-west1-b.c.example.internal",
            "zone": "projects/123456789012/zones/europe-west1-b",
            "machineType": "projects/123456789012/machineTypes/e2-medium",
            "attributes": {"powernode-seed": (seed or b"").decode(), "ssh-keys": "secret"},
        }

    def respond(self, request: Recorded) -> Reply:
        reply = self._answer(request)
        if self.flavor:
            reply.headers["Metadata-Flavor"] = "Google"
        return reply

    def _answer(self, request: Recorded) -> Reply:
        if request.headers.get("metadata-flavor") != "Google":
            return Reply(403)
        if request.path == "/computeMetadata/v1/instance/?recursive=true":
            return Reply.json(self.instance)
        if request.path == "/computeMetadata/v1/instance/attributes/powernode-seed" and self.seed:
            return Reply(200, self.seed)
        return Reply(404)


class FakeAzure(FakeServer):
    """Azure IMDS; `user_data` is the plain seed, served base64-encoded as Azure does."""

    def __init__(self, user_data: bytes | None = None) -> None:
        super().__init__()
        self.user_data = user_data
        self.compute: dict[str, Any] = {
            "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
            "location": "westeurope",
            "zone": "2",
            "vmSize": "Standard_D2s_v5",
            "name": "node-1",
            "userData": base64.b64encode(user_data or b"").decode(),
        }

    def respond(self, request: Recorded) -> Reply:
        if request.headers.get("metadata") != "true" or "x-forwarded-for" in request.headers:
            return Reply(400, b'{"error": "Bad request. Required metadata header not specified"}')
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if "api-version" not in query:
            return Reply(400)
        if url.path == "/metadata/instance":
            return Reply.json({"compute": self.compute, "network": {"interface": []}})
        if url.path == "/metadata/instance/compute/userData" and query.get("format") == ["text"]:
            return Reply(200, self.compute["userData"].encode())
        return Reply(404)


class FakeDigitalOcean(FakeServer):
    """The droplet metadata service."""

    def __init__(self, user_data: str | None = None) -> None:
        super().__init__()
        self.document: dict[str, Any] = {
            "droplet_id": 2756294,
            "hostname": "node-1",
            "region": "fra1",
            "user_data": user_data,
        }

    def respond(self, request: Recorded) -> Reply:
        if request.path == "/metadata/v1.json":
            return Reply.json(self.document)
        return Reply(404)


class FakeOpenStack(FakeServer):
    """The Nova metadata service."""

    def __init__(self, user_data: bytes | None = None) -> None:
        super().__init__()
        self.user_data = user_data
        self.meta_data: dict[str, Any] = {
            "uuid": "d8e02d56-2648-49a3-bf97-6be8f1204f38",
            "hostname": "node-1.novalocal",
            "name": "node-1",
            "availability_zone": "nova",
            "admin_pass": "secret",
        }

    def respond(self, request: Recorded) -> Reply:
        if request.path == "/openstack/latest/meta_data.json":
            return Reply.json(self.meta_data)
        if request.path == "/openstack/latest/user_data" and self.user_data is not None:
            return Reply(200, self.user_data)
        return Reply(404)
