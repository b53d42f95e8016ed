"""Signatures over module artifacts, trust policies per module, and the decision between them.

Uploads: only cosign signature manifests over the version's own artifact are kept, in either
flavour. A key signature must be well formed and name the artifact (who made it is decided at
verification, against the keys the policy pins); a certificate signature must also verify with
its certificate's key, and the certificate must be valid at upload. The upload time is recorded
and is the time certificates are checked at later: the control plane witnesses when a signature
arrived, as a transparency log would (see `signing`), so a 10-minute certificate keeps
verifying after its 10 minutes.

Policies: one `TrustPolicy` per module name, stored as `TrustPolicy.to_dict()`; every change
records `module.trust_policy_changed` with the old and the new policy. `require_trusted` is
what task creation calls; `unset_policy_decision` decides modules without a policy.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode.artifacts.models import ModuleArtifact, ModuleSignature, ModuleTrustPolicy
from powernode.artifacts.oci import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    digest_hex,
    manifest_children,
    media_type_of,
    parse_manifest,
    sha256_digest,
)
from powernode.artifacts.signing import (
    CERTIFICATE_ANNOTATION,
    OCI_MANIFEST_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    ArtifactInvalid,
    RejectedSignature,
    Rejection,
    SignatureRejected,
    VerifiedSignature,
    check_signature_manifest,
    parse_payload,
)
from powernode.artifacts.trust import (
    Decision,
    TrustPolicy,
    UntrustedArtifact,
    certificate_identity,
    evaluate,
)
from powernode.db.crud import check_version
from powernode.errors import NotFound
from powernode.events.log import EventContext, record_event
from powernode.modules.service import get_version
from powernode.modules.store import ContentStore

MAX_SIGNATURE_BLOBS = 16
"""Layers plus config a signature manifest may bring; cosign adds one layer per signature."""
MAX_BLOB_SIZE = 1 << 20


def unset_policy_decision(name: str) -> Decision:
    """How a module without a trust policy is decided: refused, and told how to set one.

    The one place to relax the rule (for example to allow unsigned modules until a policy is
    set): return `Decision(True, [...])` instead.
    """
    where = f"/api/v1/modules/{name}/trust-policy"
    return Decision(False, [f"module {name} has no trust policy: set one with PUT {where}"])


@dataclass(frozen=True)
class Verification:
    """The decision on one module version, and what it was made on."""

    name: str
    version: str
    digest: str | None
    """The artifact's manifest digest; None while it was never built (then it is unsigned)."""
    policy: TrustPolicy | None
    decision: Decision


# signatures


def check_upload(
    manifest: bytes, blobs: Mapping[str, bytes], subject: str, *, now: dt.datetime
) -> str:
    """The flavour ('tag' or 'referrer') of a signature manifest over `subject`, or Invalid.

    Checked with `signing.check_signature_manifest` (structure, payloads, annotations) and
    then, since no keys or roots are known here, each layer's payload against `subject` and
    each certificate's key against its signature (see the module docstring).
    """
    if len(manifest) > MAX_MANIFEST_SIZE:
        raise ArtifactInvalid(f"the signature manifest is larger than {MAX_MANIFEST_SIZE} bytes")
    doc = parse_manifest(manifest, where="the signature manifest")
    if media_type_of(doc, OCI_MANIFEST_MEDIA_TYPE) != OCI_MANIFEST_MEDIA_TYPE:
        raise ArtifactInvalid("a signature manifest must be an OCI image manifest")
    children, is_index = manifest_children(doc, where="the signature manifest")
    if is_index:
        raise ArtifactInvalid("a signature manifest must be an OCI image manifest, not an index")
    _check_blobs(children, blobs)
    for outcome in check_signature_manifest(manifest, blobs, subject, now=now):
        if isinstance(outcome, RejectedSignature) and outcome.reason not in (
            Rejection.UNKNOWN_SIGNER,  # a key signature: its key is the policy's business
            Rejection.UNTRUSTED_CERTIFICATE,  # no roots here: checked below, and at verification
        ):
            raise SignatureRejected(outcome.reason, outcome.detail)
    for index, layer in enumerate(children[1:]):
        _check_layer(layer, blobs[layer.digest], subject, f"layer {index}", now)
    subject_doc = doc.get("subject")
    if subject_doc is None:
        return "tag"
    if Descriptor.parse(subject_doc, where="the signature's subject").digest != subject:
        raise SignatureRejected(Rejection.OTHER_DIGEST, f"the subject is not {subject}")
    return "referrer"


def _check_blobs(children: Sequence[Descriptor], blobs: Mapping[str, bytes]) -> None:
    if len(children) > MAX_SIGNATURE_BLOBS:
        raise ArtifactInvalid(f"a signature manifest may hold {MAX_SIGNATURE_BLOBS} blobs at most")
    if len(children) < 2:
        raise ArtifactInvalid("the signature manifest has no layers")
    wanted = {child.digest: child for child in children}
    for digest, data in blobs.items():
        if digest not in wanted:
            raise ArtifactInvalid(f"blob {digest} is not referenced by the signature manifest")
        if sha256_digest(data) != digest or len(data) != wanted[digest].size:
            raise ArtifactInvalid(f"blob {digest} does not match its digest or size")
    missing = sorted(set(wanted) - set(blobs))
    if missing:
        raise ArtifactInvalid(f"the blobs of the signature manifest lack {', '.join(missing)}")


def _check_layer(
    layer: Descriptor, payload: bytes, subject: str, where: str, now: dt.datetime
) -> None:
    signed = parse_payload(payload)
    if signed != subject:
        raise SignatureRejected(Rejection.OTHER_DIGEST, f"{where} signs {signed}, not {subject}")
    cert_pem = layer.annotations.get(CERTIFICATE_ANNOTATION)
    if cert_pem is None:
        return
    cert = x509.load_pem_x509_certificate(cert_pem.encode())  # parsed already: cannot fail
    key = cert.public_key()
    signature = base64.b64decode(layer.annotations[SIGNATURE_ANNOTATION])
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureRejected(Rejection.MALFORMED, f"{where}: the key is not ECDSA")
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureRejected(
            Rejection.BAD_SIGNATURE, f"{where}: its certificate's key does not verify it"
        ) from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SignatureRejected(
            Rejection.EXPIRED_CERTIFICATE,
            f"{where}: its certificate is not valid now ({now:%Y-%m-%d %H:%M:%S} UTC); "
            "upload signatures while their certificate is valid",
        )
    certificate_identity(cert)


async def add_signature(
    session: AsyncSession,
    ctx: EventContext,
    store: ContentStore,
    *,
    version_id: uuid.UUID,
    name: str,
    version: str,
    subject: str,
    manifest: bytes,
    blobs: Mapping[str, bytes],
) -> tuple[ModuleSignature, bool]:
    """Check and keep a signature over the artifact `subject`; (row, whether it is new)."""
    now = ctx.clock.now()
    flavour = check_upload(manifest, blobs, subject, now=now)
    digest = sha256_digest(manifest)
    existing = await session.scalar(
        select(ModuleSignature).where(
            ModuleSignature.module_version_id == version_id, ModuleSignature.digest == digest
        )
    )
    if existing is not None:
        return existing, False
    for data in (*blobs.values(), manifest):
        store.put_bytes(data)
    row = ModuleSignature(
        module_version_id=version_id,
        digest=digest,
        flavour=flavour,
        created_by=ctx.actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await record_event(
        session,
        ctx,
        kind="module.signature_added",
        subject_type="module_version",
        subject_id=version_id,
        payload={
            "name": name,
            "version": version,
            "digest": digest,
            "flavour": flavour,
            "artifact_digest": subject,
        },
    )
    return row, True


async def version_signatures(
    session: AsyncSession, name: str, version: str
) -> tuple[str | None, list[ModuleSignature]]:
    """The version's artifact digest (None while unbuilt) and its signatures, oldest first."""
    row = (await get_version(session, name, version))[1]
    digest = await session.scalar(
        select(ModuleArtifact.manifest_digest).where(ModuleArtifact.module_version_id == row.id)
    )
    signatures = await session.scalars(
        select(ModuleSignature)
        .where(ModuleSignature.module_version_id == row.id)
        .order_by(ModuleSignature.created_at, ModuleSignature.id)
    )
    return digest, list(signatures)


# policies


async def find_policy(session: AsyncSession, name: str) -> ModuleTrustPolicy | None:
    return await session.scalar(
        select(ModuleTrustPolicy).where(ModuleTrustPolicy.module_name == name)
    )


async def get_policy(session: AsyncSession, name: str) -> ModuleTrustPolicy:
    row = await find_policy(session, name)
    if row is None:
        raise NotFound(f"module {name} has no trust policy")
    return row


async def put_policy(
    session: AsyncSession,
    ctx: EventContext,
    name: str,
    document: Mapping[str, Any],
    expected_version: int | None = None,
) -> ModuleTrustPolicy:
    """Set module `name`'s policy (Invalid naming a bad pattern or key); an event if it changed."""
    new = TrustPolicy.from_dict(document).to_dict()
    row = await find_policy(session, name)
    if row is not None:
        check_version(row, expected_version, f"the trust policy of {name}")
        if row.policy == new:
            return row
        old: dict[str, Any] | None = row.policy
        row.policy, row.updated_at, row.updated_by = new, ctx.clock.now(), ctx.actor
    else:
        old = None
        row = ModuleTrustPolicy(
            module_name=name, policy=new, updated_at=ctx.clock.now(), updated_by=ctx.actor
        )
        session.add(row)
    await session.flush()
    await _policy_event(session, ctx, row, old, new)
    return row


async def delete_policy(
    session: AsyncSession, ctx: EventContext, name: str, expected_version: int | None = None
) -> None:
    row = await get_policy(session, name)
    check_version(row, expected_version, f"the trust policy of {name}")
    await session.delete(row)
    await session.flush()
    await _policy_event(session, ctx, row, row.policy, None)


async def _policy_event(
    session: AsyncSession,
    ctx: EventContext,
    row: ModuleTrustPolicy,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> None:
    await record_event(
        session,
        ctx,
        kind="module.trust_policy_changed",
        subject_type="module_trust_policy",
        subject_id=row.id,
        payload={"name": row.module_name, "old": old, "new": new},
    )


# decisions


async def verify_version(
    session: AsyncSession,
    store: ContentStore,
    name: str,
    version: str,
    *,
    trusted_roots: Sequence[x509.Certificate] = (),
) -> Verification:
    """`trust.evaluate` of the version's stored signatures against the module's stored policy.

    Certificates are checked at each signature's upload time (see the module docstring).
    """
    digest, signatures = await version_signatures(session, name, version)
    policy_row = await find_policy(session, name)
    if policy_row is None:
        return Verification(name, version, digest, None, unset_policy_decision(name))
    policy = TrustPolicy.from_dict(policy_row.policy)
    outcomes: list[VerifiedSignature | RejectedSignature] = []
    if digest is not None:
        for signature in signatures:
            manifest, blobs = _stored_signature(store, signature.digest)
            outcomes += check_signature_manifest(
                manifest,
                blobs,
                digest,
                public_keys=policy.keys,
                trusted_roots=trusted_roots,
                now=signature.created_at,
            )
    return Verification(name, version, digest, policy, evaluate(policy, outcomes, digest=digest))


async def require_trusted(
    session: AsyncSession,
    store: ContentStore,
    name: str,
    version: str,
    *,
    trusted_roots: Sequence[x509.Certificate] = (),
) -> Decision:
    """The decision on `name@version` if it allows it; else `UntrustedArtifact` (403) with the
    reasons. Reads only: it never builds an artifact (an unbuilt one has no signatures)."""
    result = await verify_version(session, store, name, version, trusted_roots=trusted_roots)
    if not result.decision.allowed:
        reasons = result.decision.reasons
        raise UntrustedArtifact(
            f"module {name}@{version} is not trusted: {'; '.join(reasons)}", reasons=reasons
        )
    return result.decision


def _stored_signature(store: ContentStore, digest: str) -> tuple[bytes, dict[str, bytes]]:
    manifest = store.read_bytes(digest_hex(digest))
    children, _ = manifest_children(parse_manifest(manifest, where=digest), where=digest)
    return manifest, {c.digest: store.read_bytes(digest_hex(c.digest)) for c in children}
