"""/api/v1/modules/{name}/trust-policy, .../versions/{version}/signatures and .../verification

Who may change a trust policy: admins only. A policy decides what code every node will run;
operators upload signatures, so if they could also choose whom to trust they could trust
themselves. Reading policies and decisions needs read permission, uploading signatures operate.

Keyless signatures verify against the signing roots in `app.state.signing_roots` (a sequence of
certificates; none by default, so only pinned keys can satisfy a policy until roots are set).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Sequence
from typing import Annotated

from cryptography import x509
from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from powernode.api.deps import (
    Caller,
    ExpectedVersion,
    Operator,
    Reader,
    SessionDep,
    StoreDep,
    require,
)
from powernode.api.routes.modules import ModuleName, VersionText
from powernode.artifacts import service
from powernode.artifacts import store as registry
from powernode.artifacts.models import ModuleSignature, ModuleTrustPolicy
from powernode.artifacts.oci import MAX_MANIFEST_SIZE
from powernode.artifacts.signing import signature_tag
from powernode.auth.roles import Permission
from powernode.db.crud import commit
from powernode.errors import Invalid, NotFound

router = APIRouter(tags=["supply chain"])

_B64_MANIFEST = (MAX_MANIFEST_SIZE * 4) // 3 + 4
_B64_BLOB = (service.MAX_BLOB_SIZE * 4) // 3 + 4


PolicyAdmin = Annotated[Caller, Depends(require(Permission.MANAGE_TRUST))]


def _signing_roots(request: Request) -> Sequence[x509.Certificate]:
    roots: Sequence[x509.Certificate] = getattr(request.app.state, "signing_roots", ())
    return roots


SigningRoots = Annotated[Sequence[x509.Certificate], Depends(_signing_roots)]


class IdentityRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity: str = Field(max_length=1000, description="Regexp, whole-string match.")
    issuer: str = Field(max_length=1000, description="Regexp, whole-string match.")


class TrustPolicyIn(BaseModel):
    """Who may sign a module: (identity, issuer) regexp pairs and/or pinned public keys."""

    model_config = ConfigDict(extra="forbid")

    identities: list[IdentityRule] = Field(default_factory=list, max_length=100)
    public_keys: list[Annotated[str, Field(max_length=16384)]] = Field(
        default_factory=list,
        max_length=100,
        description="ECDSA P-256 SubjectPublicKeyInfo PEM (the format of cosign.pub).",
    )


class TrustPolicyOut(TrustPolicyIn):
    name: str
    updated_at: dt.datetime
    updated_by: str
    version: int

    @classmethod
    def of(cls, row: ModuleTrustPolicy) -> TrustPolicyOut:
        return cls(
            name=row.module_name,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
            version=row.version,
            **row.policy,
        )


class SignatureIn(BaseModel):
    """A cosign signature manifest and the blobs it references, base64-encoded."""

    manifest: str = Field(max_length=_B64_MANIFEST)
    blobs: dict[Annotated[str, Field(max_length=80)], Annotated[str, Field(max_length=_B64_BLOB)]]

    def decoded(self) -> tuple[bytes, dict[str, bytes]]:
        if len(self.blobs) > service.MAX_SIGNATURE_BLOBS:
            raise Invalid(f"a signature brings {service.MAX_SIGNATURE_BLOBS} blobs at most")
        return _b64(self.manifest, "manifest"), {
            digest: _b64(data, f"blobs[{digest}]") for digest, data in self.blobs.items()
        }


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{field} is not standard base64") from None


class SignatureOut(BaseModel):
    name: str
    version: str
    digest: str
    flavour: str
    artifact_digest: str
    tag: str | None = Field(description="The `.sig` tag it is served under (tag flavour).")
    created_at: dt.datetime
    created_by: str

    @classmethod
    def of(cls, name: str, version: str, subject: str, row: ModuleSignature) -> SignatureOut:
        return cls(
            name=name,
            version=version,
            digest=row.digest,
            flavour=row.flavour,
            artifact_digest=subject,
            tag=signature_tag(subject) if row.flavour == "tag" else None,
            created_at=row.created_at,
            created_by=row.created_by,
        )


class VerificationOut(BaseModel):
    name: str
    version: str
    digest: str | None = Field(description="The artifact's manifest digest; null if unbuilt.")
    policy: TrustPolicyIn | None
    allowed: bool
    reasons: list[str] = Field(description="Why each signature that did not count did not.")
    signer: str | None = Field(description="Who satisfied the policy.")


@router.get("/modules/{name}/trust-policy")
async def get_trust_policy(session: SessionDep, _: Reader, name: ModuleName) -> TrustPolicyOut:
    return TrustPolicyOut.of(await service.get_policy(session, name))


@router.put("/modules/{name}/trust-policy")
async def put_trust_policy(
    session: SessionDep,
    caller: PolicyAdmin,
    name: ModuleName,
    body: TrustPolicyIn,
    version: ExpectedVersion = None,
) -> TrustPolicyOut:
    """Set who may sign module `name` (admins); the module need not exist yet."""
    row = await service.put_policy(session, caller.ctx, name, body.model_dump(), version)
    await commit(session)
    return TrustPolicyOut.of(row)


@router.delete("/modules/{name}/trust-policy", status_code=status.HTTP_204_NO_CONTENT)
async def delete_trust_policy(
    session: SessionDep, caller: PolicyAdmin, name: ModuleName, version: ExpectedVersion = None
) -> Response:
    await service.delete_policy(session, caller.ctx, name, version)
    await commit(session)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/modules/{name}/versions/{version}/signatures",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "This signature was uploaded before."}},
)
async def add_signature(
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    caller: Operator,
    name: ModuleName,
    version: VersionText,
    body: SignatureIn,
) -> SignatureOut:
    """Upload a cosign signature over the version's artifact (built first if needed); it is
    then served on /v2 as the `.sig` tag or as a referrer, by its flavour."""
    manifest, blobs = body.decoded()
    # Building the artifact may take a while: not inside a transaction (on SQLite, the lock).
    await session.rollback()
    db = request.app.state.db
    ref = await registry.find_version(db, name, version)
    if ref is None:
        raise NotFound(f"module {name}@{version} does not exist")
    artifact = await registry.ensure_artifact(db, store, ref, caller.ctx.clock)
    row, created = await service.add_signature(
        session,
        caller.ctx,
        store,
        version_id=ref.id,
        name=name,
        version=version,
        subject=artifact.manifest_digest,
        manifest=manifest,
        blobs=blobs,
    )
    await commit(session)
    if not created:
        response.status_code = status.HTTP_200_OK
    return SignatureOut.of(name, version, artifact.manifest_digest, row)


@router.get("/modules/{name}/versions/{version}/signatures")
async def list_signatures(
    session: SessionDep, _: Reader, name: ModuleName, version: VersionText
) -> list[SignatureOut]:
    """The signatures uploaded for the version, oldest first."""
    digest, rows = await service.version_signatures(session, name, version)
    return [SignatureOut.of(name, version, digest or "", row) for row in rows]


@router.get("/modules/{name}/versions/{version}/verification")
async def get_verification(
    session: SessionDep,
    store: StoreDep,
    _: Reader,
    roots: SigningRoots,
    name: ModuleName,
    version: VersionText,
) -> VerificationOut:
    """The trust decision on the version: its stored signatures against the module's policy."""
    result = await service.verify_version(session, store, name, version, trusted_roots=roots)
    return VerificationOut(
        name=name,
        version=version,
        digest=result.digest,
        policy=None if result.policy is None else TrustPolicyIn(**result.policy.to_dict()),
        allowed=result.decision.allowed,
        reasons=result.decision.reasons,
        signer=result.decision.signer,
    )
