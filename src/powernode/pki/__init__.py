"""The control plane's PKI: a pure library, no database and no web framework.

- `ca`: the root and intermediate CA; node and server certificates; the CRL.
- `csr`: what a node's CSR must be before anything is issued for it.
- `identity`: the node id a verified client certificate names.
- `bootstrap_tokens`: the single-use tokens nodes enroll with.
- `store`: the CA's files on disk, created atomically.
- `errors`: `PkiError` and its categorised subclasses.
"""

from powernode.pki.ca import CertificateAuthority, IssuedCertificate
from powernode.pki.errors import PkiError, PkiInvalid, PkiUnauthorized, PkiUnavailable

__all__ = [
    "CertificateAuthority",
    "IssuedCertificate",
    "PkiError",
    "PkiInvalid",
    "PkiUnauthorized",
    "PkiUnavailable",
]
