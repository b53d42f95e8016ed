"""Errors the PKI raises; each subclass takes its category from the error class it mixes in.

`except PkiError` catches every PKI failure; the API and the CLI map them like any other
`PowernodeError`, by category:

- `PkiInvalid`: a bad CSR, host name, lifetime or passphrase, or CA files that cannot be used as
  they are (wrong passphrase, missing or mismatched files). The fix is in the input or the
  configuration, so retrying unchanged never helps.
- `PkiUnauthorized`: a certificate or bootstrap token that does not prove who the caller is.
- `PkiUnavailable`: the CA cannot issue right now (its intermediate has expired).
"""

from __future__ import annotations

from powernode.errors import Invalid, PowernodeError, Unauthorized, Unavailable


class PkiError(PowernodeError):
    """Root of every error `powernode.pki` raises."""


class PkiInvalid(PkiError, Invalid):
    title = "Invalid certificate request or CA"


class PkiUnauthorized(PkiError, Unauthorized):
    title = "Identity not proven"


class PkiUnavailable(PkiError, Unavailable):
    title = "Certificate authority unavailable"
