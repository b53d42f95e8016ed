"""Real registries for the tests: Debian's docker-registry, plain, with htpasswd, with tokens.

The token server is a tiny HTTP server issuing the JWTs docker-registry's `token` auth checks:
ES256, the signing certificate in `x5c`, the certificate as the registry's root bundle.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = "docker-registry"
SKOPEO_BIN = "skopeo"
USER, PASSWORD = "builder", "correct horse battery staple"


def require(binary: str, package: str) -> str:
    """The path of `binary`; fails (never skips) the test when it is not installed."""
    found = shutil.which(binary)
    if found is None:
        pytest.fail(
            f"{binary} is not installed: `make setup` installs it (Debian package {package})",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Registry:
    """A running docker-registry: `host` is `127.0.0.1:PORT`, storage under `root`."""

    host: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]

    def ref(self, repository: str, tag: str | None = None) -> str:
        return f"http://{self.host}/{repository}" + (f":{tag}" if tag else "")

    def docker(self, repository: str, tag: str) -> str:
        """The reference skopeo takes: `docker://HOST/REPO:TAG`."""
        return f"docker://{self.host}/{repository}:{tag}"

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def requests(self, method: str, path_part: str) -> list[str]:
        """Access-log lines of `method` requests whose path holds `path_part`."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if f'"{method} ' in line and path_part in line]


def start_registry(workdir: Path, auth: dict[str, Any] | None = None) -> Registry:
    """Start docker-registry on a free port with filesystem storage in `workdir`."""
    binary = require(REGISTRY_BIN, "docker-registry")
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if auth is not None:
        config["auth"] = auth
    config_path = workdir / "config.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log = workdir / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)], stdout=out, stderr=subprocess.STDOUT
        )
    registry = Registry(f"127.0.0.1:{port}", workdir / "storage", log, process)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://{registry.host}/v2/", timeout=1).status_code in (200, 401):
                return registry
        time.sleep(0.05)
    stop(registry)
    pytest.fail(f"docker-registry did not start:\n{log.read_text()}", pytrace=False)


def stop(registry: Registry) -> None:
    registry.process.terminate()
    try:
        registry.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        registry.process.kill()
        registry.process.wait()


def htpasswd_auth(workdir: Path) -> dict[str, Any]:
    """docker-registry's htpasswd auth with one bcrypt user (USER, PASSWORD)."""
    line = f"{USER}:{_bcrypt()(PASSWORD)}\n"
    path = workdir / "htpasswd"
    path.write_text(line)
    return {"htpasswd": {"realm": "powernode-test", "path": str(path)}}


def _bcrypt() -> Any:
    """bcrypt hashing: the Python package if present, else apache2-utils' htpasswd."""
    try:
        import bcrypt
    except ImportError:
        binary = require("htpasswd", "apache2-utils")

        def with_tool(password: str) -> str:
            out = subprocess.run(
                [binary, "-nbB", "-C", "4", "x", password], capture_output=True, check=True
            )
            return out.stdout.decode().strip().split(":", 1)[1]

        return with_tool

    def with_package(password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()

    return with_package


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues registry tokens to USER/PASSWORD for whatever repository scope is asked."""

    workdir: Path
    service: str = "powernode-test-registry"
    issuer: str = "powernode-test-issuer"
    scopes: list[list[str]] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "powernode test tokens")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = self.workdir / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/token"

    def registry_auth(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.bundle),
            }
        }

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": USER,
            "aud": self.service,
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("Authorization") != expected:
                    server.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                scopes = query.get("scope", [])
                server.scopes.append(scopes)
                body = json.dumps({"token": server.token(scopes), "expires_in": 600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@contextlib.contextmanager
def running(registry: Registry) -> Iterator[Registry]:
    try:
        yield registry
    finally:
        stop(registry)


def skopeo(*args: str) -> str:
    """Run skopeo (no signature policy: these are test images); its stdout."""
    binary = require(SKOPEO_BIN, "skopeo")
    proc = subprocess.run(
        [binary, "--insecure-policy", *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"skopeo {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
    return proc.stdout
