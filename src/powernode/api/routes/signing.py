"""/api/v1/signing: keyless-style signing certificates for publishers.

The caller sends the public half of a fresh key; the control plane's signing CA certifies it
for 10 minutes with the caller's identity in the SAN and the control plane as issuer (Fulcio's
extensions). The caller signs one artifact with the key and throws it away; the certificate and
chain ride in the signature.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from powernode.api.deps import Operator, Reader, SessionDep
from powernode.api.runtime import require_runtime
from powernode.db.crud import commit
from powernode.errors import Invalid
from powernode.events.log import record_event

router = APIRouter(prefix="/signing", tags=["signing"], dependencies=[Depends(require_runtime)])


class CertificateRequest(BaseModel):
    public_key: str = Field(max_length=4096, description="PEM public key (ECDSA P-256).")


class SigningCertificate(BaseModel):
    certificate: str
    chain: str
    identity: str
    issuer: str
    not_after: dt.datetime


def issuer_url(request: Request) -> str:
    """The control plane as an issuer: its configured URL, else the URL it was reached at."""
    settings = request.app.state.settings
    return str(settings.url or str(request.base_url)).rstrip("/")


class SigningRoots(BaseModel):
    roots: list[str] = Field(description="PEM root certificates keyless signatures chain to.")


@router.get("/roots")
async def roots(request: Request, _: Reader) -> SigningRoots:
    """The roots this control plane trusts for keyless-style signatures (its signing CA)."""
    pem = serialization.Encoding.PEM
    return SigningRoots(
        roots=[c.public_bytes(pem).decode() for c in request.app.state.signing_roots]
    )


@router.post("/certificate", status_code=status.HTTP_201_CREATED)
async def certificate(
    request: Request, session: SessionDep, caller: Operator, body: CertificateRequest
) -> SigningCertificate:
    """A 10-minute signing certificate for the caller's identity (`powernode://token/<name>`)."""
    try:
        key = serialization.load_pem_public_key(body.public_key.encode())
    except ValueError:
        raise Invalid("public_key is not a PEM public key", field="public_key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Invalid("public_key must be an ECDSA P-256 key", field="public_key")
    identity = f"powernode://token/{quote(caller.principal.name, safe='')}"
    issuer = issuer_url(request)
    authority = request.app.state.signing
    cert = authority.issue_signing_certificate(
        key, identity, issuer, now=request.app.state.clock.now()
    )
    await record_event(
        session,
        caller.ctx,
        kind="signing.certificate_issued",
        subject_type="signing",
        subject_id=None,
        payload={
            "identity": identity,
            "issuer": issuer,
            "serial": f"{cert.serial_number:x}",
            "not_after": cert.not_valid_after_utc.isoformat(),
        },
    )
    await commit(session)
    pem = serialization.Encoding.PEM
    return SigningCertificate(
        certificate=cert.public_bytes(pem).decode(),
        chain="".join(c.public_bytes(pem).decode() for c in authority.chain),
        identity=identity,
        issuer=issuer,
        not_after=cert.not_valid_after_utc,
    )
