"""A node's identity in its certificate: CN `<node_id>` and URI SAN `powernode://node/<node_id>`.

The two must agree. This module only reads identities: it does not check the chain, the validity
period or revocation (the TLS handshake checks the chain and dates, the server checks the serial
against the revocation list), so call it only on a certificate the handshake has verified.
"""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from powernode.pki.errors import PkiInvalid, PkiUnauthorized

NODE_URI_PREFIX = "powernode://node/"

# Node ids are UUIDs today; anything URI- and CN-safe (CN is at most 64 characters) is accepted.
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_node_id(node_id: str) -> str:
    """Return `node_id` if it can name a node in a certificate, else raise `PkiInvalid`."""
    if not _NODE_ID.fullmatch(node_id):
        raise PkiInvalid(
            f"invalid node id {node_id!r}: expected 1 to 64 characters [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return node_id


def node_uri(node_id: str) -> str:
    """The URI SAN naming `node_id`."""
    return NODE_URI_PREFIX + check_node_id(node_id)


def certificate_from_der(der: bytes) -> x509.Certificate:
    """Parse a DER certificate (as a TLS peer presents it); `PkiUnauthorized` if it is not one."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PkiUnauthorized(f"the client certificate is not valid DER: {exc}") from exc


def node_id_from_certificate(cert: x509.Certificate) -> str:
    """The node id a certificate names; `PkiUnauthorized` unless its CN and URI SAN agree."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PkiUnauthorized("the certificate names no node: it has no subjectAltName") from None
    uris = [
        uri
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(NODE_URI_PREFIX)
    ]
    if len(uris) != 1:
        raise PkiUnauthorized(
            f"the certificate must name exactly one {NODE_URI_PREFIX}<id> URI, it names {len(uris)}"
        )
    node_id = uris[0].removeprefix(NODE_URI_PREFIX)
    common_names = [attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if common_names != [node_id]:
        raise PkiUnauthorized(
            f"the certificate's common name {common_names} does not match its node URI {uris[0]}"
        )
    if not _NODE_ID.fullmatch(node_id):
        raise PkiUnauthorized(f"the certificate names an invalid node id {node_id!r}")
    return node_id
