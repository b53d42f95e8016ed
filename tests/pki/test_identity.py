"""Reading the node id from a client certificate: CN and URI SAN must agree."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from powernode.errors import Category
from powernode.pki import CertificateAuthority, PkiError
from powernode.pki.identity import certificate_from_der, node_id_from_certificate, node_uri
from tests.pki.factories import make_csr, self_signed


def _refusal(*, common_names: tuple[str, ...], uris: tuple[str, ...] | None) -> str:
    cert = self_signed(common_names=common_names, uris=uris)
    with pytest.raises(PkiError) as caught:
        node_id_from_certificate(cert)
    assert caught.value.category is Category.UNAUTHORIZED
    return caught.value.detail


def test_an_issued_node_certificate_names_its_node(
    ca: CertificateAuthority, now: dt.datetime
) -> None:
    issued = ca.issue_node_certificate(
        make_csr(), "0190f3c1-7b1e", lifetime=dt.timedelta(hours=1), now=now
    )
    cert = x509.load_pem_x509_certificate(issued.pem.encode())
    der = cert.public_bytes(serialization.Encoding.DER)
    assert node_id_from_certificate(certificate_from_der(der)) == "0190f3c1-7b1e"


def test_the_node_uri_is_the_protocol_scheme_and_the_id() -> None:
    assert node_uri("node-1") == "powernode://node/node-1"


def test_a_common_name_that_differs_from_the_uri_is_refused() -> None:
    detail = _refusal(common_names=("node-2",), uris=("powernode://node/node-1",))
    assert "does not match its node URI powernode://node/node-1" in detail


def test_two_common_names_are_refused() -> None:
    assert "does not match" in _refusal(
        common_names=("node-1", "node-1"), uris=("powernode://node/node-1",)
    )


def test_a_certificate_without_a_subject_alt_name_is_refused() -> None:
    assert "no subjectAltName" in _refusal(common_names=("node-1",), uris=None)


def test_a_certificate_without_a_node_uri_is_refused() -> None:
    detail = _refusal(common_names=("node-1",), uris=("https://node-1.example",))
    assert "exactly one powernode://node/<id> URI, it names 0" in detail


def test_a_certificate_naming_two_nodes_is_refused() -> None:
    detail = _refusal(
        common_names=("node-1",), uris=("powernode://node/node-1", "powernode://node/node-2")
    )
    assert "it names 2" in detail


def test_a_node_id_with_a_path_in_it_is_refused() -> None:
    detail = _refusal(common_names=("a/../b",), uris=("powernode://node/a/../b",))
    assert detail == "the certificate names an invalid node id 'a/../b'"


def test_bytes_that_are_not_a_der_certificate_are_refused() -> None:
    with pytest.raises(PkiError, match="not valid DER") as caught:
        certificate_from_der(b"\x30\x03garbage")
    assert caught.value.category is Category.UNAUTHORIZED
