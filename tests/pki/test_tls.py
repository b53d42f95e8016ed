"""Real TLS handshakes on loopback: the node API's server certificate and mutual TLS.

The server requires a client certificate chaining to root + intermediate; the client trusts only
the root (as an agent does from its seed) and checks the server's IP address. Both sides verify
under `VERIFY_X509_STRICT`.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from powernode.pki import CertificateAuthority
from powernode.pki.identity import certificate_from_der, node_id_from_certificate
from tests.pki.factories import PASSPHRASE, key_pem, make_csr, new_key, write

TIMEOUT_S = 10
HOUR = dt.timedelta(hours=1)


@dataclass
class ServerOutcome:
    node_id: str | None = None
    error: BaseException | None = None


@dataclass
class Node:
    cert: Path
    key: Path


def _node(ca: CertificateAuthority, node_id: str, now: dt.datetime, directory: Path) -> Node:
    key = new_key()
    issued = ca.issue_node_certificate(make_csr(key), node_id, lifetime=HOUR, now=now)
    directory.mkdir()
    return Node(
        write(directory / "cert.pem", issued.pem), write(directory / "key.pem", key_pem(key))
    )


def _server_context(ca: CertificateAuthority, now: dt.datetime, tmp_path: Path) -> ssl.SSLContext:
    chain_pem, server_key_pem = ca.issue_server_certificate(["127.0.0.1"], lifetime=HOUR, now=now)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        write(tmp_path / "server.pem", chain_pem),
        write(tmp_path / "server-key.pem", server_key_pem),
    )
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(
        cafile=write(tmp_path / "client-ca.pem", ca.root_pem + ca.intermediate_pem)
    )
    return context


def _client_context(root_pem: str, node: Node, tmp_path: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its hostname
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cafile=write(tmp_path / "trust.pem", root_pem))
    context.load_cert_chain(node.cert, node.key)
    return context


def _serve_one(listener: socket.socket, context: ssl.SSLContext, outcome: ServerOutcome) -> None:
    """Accept one connection, shake hands and answer with the node id the client proved."""
    try:
        conn, _ = listener.accept()
        conn.settimeout(TIMEOUT_S)
        with context.wrap_socket(conn, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            outcome.node_id = node_id_from_certificate(certificate_from_der(der))
            tls.sendall(outcome.node_id.encode())
    except BaseException as exc:
        outcome.error = exc


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext
) -> tuple[ServerOutcome, bytes | BaseException]:
    """One connection over loopback; what the server saw and what the client read (or raised)."""
    outcome = ServerOutcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT_S)
        thread = threading.Thread(target=_serve_one, args=(listener, server, outcome))
        thread.start()
        received: bytes | BaseException
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=TIMEOUT_S) as sock,
                client.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
            ):
                received = tls.recv(1024)
        except (ssl.SSLError, OSError) as exc:
            received = exc
        thread.join(TIMEOUT_S)
        assert not thread.is_alive()
    return outcome, received


@pytest.fixture
def server(ca: CertificateAuthority, now: dt.datetime, tmp_path: Path) -> ssl.SSLContext:
    return _server_context(ca, now, tmp_path)


def test_a_node_with_its_issued_certificate_completes_mutual_tls(
    ca: CertificateAuthority, server: ssl.SSLContext, now: dt.datetime, tmp_path: Path
) -> None:
    node = _node(ca, "node-1", now, tmp_path / "node")
    outcome, received = _handshake(server, _client_context(ca.root_pem, node, tmp_path))
    assert outcome.error is None
    assert outcome.node_id == "node-1"
    assert received == b"node-1"


def test_a_client_certificate_from_another_ca_fails_the_handshake(
    ca: CertificateAuthority, server: ssl.SSLContext, now: dt.datetime, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.load_or_create(tmp_path / "other-ca", PASSPHRASE, now=now)
    node = _node(stranger, "node-1", now, tmp_path / "node")
    outcome, received = _handshake(server, _client_context(ca.root_pem, node, tmp_path))
    assert isinstance(outcome.error, ssl.SSLCertVerificationError)
    assert outcome.node_id is None
    assert outcome.error.verify_message == "unable to get local issuer certificate"
    assert isinstance(received, OSError)  # the server's alert: no data ever reaches the client


def test_a_server_certificate_of_the_same_ca_is_no_client_certificate(
    ca: CertificateAuthority, server: ssl.SSLContext, now: dt.datetime, tmp_path: Path
) -> None:
    chain_pem, key = ca.issue_server_certificate(["127.0.0.1"], lifetime=HOUR, now=now)
    node = Node(
        write(tmp_path / "as-client.pem", chain_pem), write(tmp_path / "as-client.key", key)
    )
    outcome, received = _handshake(server, _client_context(ca.root_pem, node, tmp_path))
    assert isinstance(outcome.error, ssl.SSLCertVerificationError)
    assert outcome.error.verify_message == "unsuitable certificate purpose"
    assert isinstance(received, OSError)


def test_a_client_trusting_another_root_refuses_the_server(
    ca: CertificateAuthority, server: ssl.SSLContext, now: dt.datetime, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.load_or_create(tmp_path / "other-ca", PASSPHRASE, now=now)
    node = _node(ca, "node-1", now, tmp_path / "node")
    outcome, received = _handshake(server, _client_context(stranger.root_pem, node, tmp_path))
    assert isinstance(received, ssl.SSLCertVerificationError)
    assert outcome.node_id is None
