"""Compliance snapshots: a signed, audit-grade JSON document of the whole fleet.

A snapshot file (and the API's answer) reads::

    {"snapshot": {...}, "signature": {"algorithm": "ECDSA-P256-SHA256", "key_id": "<hex>",
                                      "public_key_pem": "-----BEGIN PUBLIC KEY-----...",
                                      "value": "<base64 of the DER ECDSA signature>"}}

Canonical form (what is signed): the `snapshot` object alone, serialized as canonical JSON:
keys sorted, no whitespace (separators `,` and `:`), UTF-8 with `ensure_ascii=False`, no NaN or
Infinity. Every value in a snapshot is a string, an integer, a boolean, null, a list or an
object (no floats), so any JSON implementation reproduces the bytes. Times are UTC ISO 8601 with
microseconds and a `Z` (`2026-11-01T12:00:00.000000Z`). The signature is ECDSA over P-256 with
SHA-256, DER-encoded. To verify offline: parse the file, canonicalize `snapshot`, check `value`
with the public key at `DATA_DIR/keys/compliance-signing.pub.pem` (or `powernode compliance
verify FILE --public-key that.pem`).

Key id: the hex SHA-256 of the public key's DER SubjectPublicKeyInfo. It appears in the signed
snapshot (`key_id`) and in the signature block; both must name the key that verifies.

The key is created on first use (`load_or_create_signing_key`) at
`DATA_DIR/keys/compliance-signing.pem` (directory 0700, file 0600), under an exclusive `flock`
on `DATA_DIR/keys/.lock`, so concurrent first uses (several workers, the CLI) create one key.

Reading: each table is read in one query of the needed columns (labels of all nodes in one more),
so a snapshot costs a constant number of queries however large the fleet.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fcntl
import hashlib
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from powernode import __version__
from powernode.auth.models import ApiToken
from powernode.bootstrap import write_private_file
from powernode.errors import Invalid
from powernode.events.log import EventContext, record_event
from powernode.fleet.models import Node, NodeInstance, NodeLabel
from powernode.modules.models import Module, ModuleVersion
from powernode.pki.models import NodeCertificate
from powernode.providers.models import ProviderAccount
from powernode.templates.models import Template, TemplateModule

__all__ = [
    "ALGORITHM",
    "FORMAT",
    "SigningKey",
    "SnapshotInvalid",
    "VerifiedSnapshot",
    "build_snapshot",
    "canonical_json",
    "key_id_of",
    "load_or_create_signing_key",
    "parse_document",
    "record_snapshot_event",
    "sign_snapshot",
    "verify_document",
]

ALGORITHM = "ECDSA-P256-SHA256"
FORMAT = "powernode.compliance-snapshot/v1"
PRIVATE_KEY_FILE = "compliance-signing.pem"
PUBLIC_KEY_FILE = "compliance-signing.pub.pem"

_NOT_TRACKED = "not-tracked"


class SnapshotInvalid(Invalid):
    """A snapshot document that is malformed or whose signature does not hold."""

    title = "Compliance snapshot does not verify"


# --- canonical form and keys -------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of `value`: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    """Hex SHA-256 of the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """The control plane's compliance signing key."""

    private_key: ec.EllipticCurvePrivateKey

    @property
    def key_id(self) -> str:
        return key_id_of(self.private_key.public_key())

    @property
    def public_key_pem(self) -> str:
        return _public_pem(self.private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        """A DER-encoded ECDSA P-256 / SHA-256 signature of `data`."""
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))


def load_or_create_signing_key(data_dir: Path) -> SigningKey:
    """The key at DATA_DIR/keys/compliance-signing.pem, created (0600, dir 0700) on first use."""
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    private_path, public_path = keys / PRIVATE_KEY_FILE, keys / PUBLIC_KEY_FILE
    with open(keys / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if private_path.exists():
            key = _load_private_key(private_path)
        else:
            key = SigningKey.generate()
            pem = key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private_file(private_path, pem.decode("ascii"))
        if not public_path.exists() or public_path.read_text() != key.public_key_pem:
            _write_public_file(public_path, key.public_key_pem)
    return key


def _load_private_key(path: Path) -> SigningKey:
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise Invalid(f"{path} is not a readable unencrypted PEM private key: {exc}") from exc
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or not isinstance(
        loaded.curve, ec.SECP256R1
    ):
        raise Invalid(f"{path} is not an ECDSA P-256 key; move it away to create a new one")
    return SigningKey(loaded)


def _write_public_file(path: Path, content: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --- reading the fleet -------------------------------------------------------------------------


def _time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(value: uuid.UUID | None) -> str | None:
    # asyncpg returns its own UUID class; str() is the same text for both.
    return None if value is None else str(value)


async def _nodes(session: AsyncSession) -> list[dict[str, Any]]:
    labels: dict[str, dict[str, str]] = defaultdict(dict)
    label_rows = await session.execute(
        select(NodeLabel.node_id, NodeLabel.key, NodeLabel.value).order_by(
            NodeLabel.node_id, NodeLabel.key
        )
    )
    for node_id, key, value in label_rows:
        labels[str(node_id)][key] = value
    rows = await session.execute(
        select(
            Node.id,
            Node.name,
            Node.arch,
            Node.state,
            Node.desired_state,
            Node.failure_reason,
            Node.template_id,
            Template.name.label("template_name"),
            Node.provider_account_id,
            ProviderAccount.name.label("provider_account_name"),
            Node.region_id,
            Node.zone_id,
            Node.created_at,
            Node.updated_at,
            Node.state_changed_at,
            Node.version,
        )
        .outerjoin(Template, Template.id == Node.template_id)
        .outerjoin(ProviderAccount, ProviderAccount.id == Node.provider_account_id)
        .order_by(Node.name)
    )
    return [
        {
            "id": str(r.id),
            "name": r.name,
            "arch": r.arch,
            "state": r.state,
            "desired_state": r.desired_state,
            "failure_reason": r.failure_reason,
            "labels": labels.get(str(r.id), {}),
            "template": None
            if r.template_id is None
            else {"id": str(r.template_id), "name": r.template_name},
            "provider_account": None
            if r.provider_account_id is None
            else {"id": str(r.provider_account_id), "name": r.provider_account_name},
            "region_id": _id(r.region_id),
            "zone_id": _id(r.zone_id),
            "created_at": _time(r.created_at),
            "updated_at": _time(r.updated_at),
            "state_changed_at": _time(r.state_changed_at),
            "version": r.version,
        }
        for r in rows
    ]


async def _instances(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            NodeInstance.id,
            NodeInstance.node_id,
            NodeInstance.name,
            NodeInstance.kind,
            NodeInstance.spec,
            NodeInstance.state,
            NodeInstance.desired_state,
            NodeInstance.failure_reason,
            NodeInstance.created_at,
            NodeInstance.updated_at,
            NodeInstance.state_changed_at,
            NodeInstance.version,
        ).order_by(NodeInstance.node_id, NodeInstance.name)
    )
    return [
        {
            "id": str(r.id),
            "node_id": str(r.node_id),
            "name": r.name,
            "kind": r.kind,
            # The digest, not the spec: a spec may carry values an auditor's copy should not.
            "spec_sha256": hashlib.sha256(canonical_json(r.spec)).hexdigest(),
            "state": r.state,
            "desired_state": r.desired_state,
            "failure_reason": r.failure_reason,
            "created_at": _time(r.created_at),
            "updated_at": _time(r.updated_at),
            "state_changed_at": _time(r.state_changed_at),
            "version": r.version,
        }
        for r in rows
    ]


async def _templates(session: AsyncSession) -> list[dict[str, Any]]:
    stacks: dict[str, list[dict[str, str]]] = defaultdict(list)
    module_rows = await session.execute(
        select(
            TemplateModule.template_id, TemplateModule.module_name, TemplateModule.module_version
        ).order_by(TemplateModule.template_id, TemplateModule.position)
    )
    for template_id, name, version in module_rows:
        stacks[str(template_id)].append({"name": name, "version": version})
    rows = await session.execute(
        select(
            Template.id,
            Template.name,
            Template.description,
            Template.created_at,
            Template.updated_at,
            Template.version,
        ).order_by(Template.name)
    )
    return [
        {
            "id": str(r.id),
            "name": r.name,
            "description": r.description,
            "modules": stacks.get(str(r.id), []),
            "created_at": _time(r.created_at),
            "updated_at": _time(r.updated_at),
            "version": r.version,
        }
        for r in rows
    ]


async def _module_versions(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            ModuleVersion.id,
            Module.name,
            ModuleVersion.version,
            ModuleVersion.entries_sha256,
            ModuleVersion.file_count,
            ModuleVersion.total_bytes,
            ModuleVersion.created_at,
            ModuleVersion.created_by,
        )
        .join(Module, Module.id == ModuleVersion.module_id)
        .order_by(Module.name, ModuleVersion.created_at, ModuleVersion.version)
    )
    return [
        {
            "id": str(r.id),
            "name": r.name,
            "version": r.version,
            "entries_sha256": r.entries_sha256,
            "file_count": r.file_count,
            "total_bytes": r.total_bytes,
            "created_at": _time(r.created_at),
            "created_by": r.created_by,
        }
        for r in rows
    ]


async def _api_tokens(session: AsyncSession) -> list[dict[str, Any]]:
    # Metadata only: never `secret_hash`, which is not even selected.
    rows = await session.execute(
        select(
            ApiToken.id,
            ApiToken.token_id,
            ApiToken.name,
            ApiToken.role,
            ApiToken.created_at,
            ApiToken.created_by,
            ApiToken.expires_at,
            ApiToken.revoked_at,
            ApiToken.last_used_at,
        ).order_by(ApiToken.id)
    )
    return [
        {
            "id": str(r.id),
            "token_id": r.token_id,
            "name": r.name,
            "role": r.role,
            "created_at": _time(r.created_at),
            "created_by": r.created_by,
            "expires_at": _time(r.expires_at),
            "revoked_at": _time(r.revoked_at),
            "last_used_at": _time(r.last_used_at),
        }
        for r in rows
    ]


async def _certificates(session: AsyncSession) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(
            NodeCertificate.serial,
            NodeCertificate.node_id,
            NodeCertificate.fingerprint_sha256,
            NodeCertificate.not_before,
            NodeCertificate.not_after,
            NodeCertificate.revoked_at,
            NodeCertificate.revocation_reason,
        ).order_by(NodeCertificate.node_id, NodeCertificate.issued_at)
    )
    return [
        {
            "serial": r.serial,
            "node_id": str(r.node_id),
            "fingerprint_sha256": r.fingerprint_sha256,
            "not_before": _time(r.not_before),
            "not_after": _time(r.not_after),
            "revoked": r.revoked_at is not None,
            "revoked_at": _time(r.revoked_at),
            "revocation_reason": r.revocation_reason,
        }
        for r in rows
    ]


async def _drift(session: AsyncSession) -> dict[str, Any]:
    """Nodes with assigned modules: whether what their agent reports matches (in_sync /
    drifted; null until it reports)."""
    rows = await session.execute(
        select(Node.id, Node.name, Node.desired_modules, Node.module_drift)
        .where(Node.desired_modules.is_not(None))
        .order_by(Node.id)
    )
    nodes = [
        {
            "node_id": str(r.id),
            "name": r.name,
            "desired": r.desired_modules,
            "drift": r.module_drift,
        }
        for r in rows
    ]
    drifted = sum(1 for n in nodes if n["drift"] == "drifted")
    return {"status": "tracked", "drifted": drifted, "nodes": nodes}


def _not_tracked(what: str, items_key: str) -> dict[str, Any]:
    return {"status": _NOT_TRACKED, "detail": f"{what} is not tracked yet", items_key: []}


async def build_snapshot(
    session: AsyncSession, key: SigningKey, generated_at: dt.datetime
) -> dict[str, Any]:
    """The signed document `{"snapshot": ..., "signature": ...}` of the fleet as `session` sees
    it; give it one read transaction so all sections describe the same moment."""
    nodes = await _nodes(session)
    instances = await _instances(session)
    templates = await _templates(session)
    module_versions = await _module_versions(session)
    api_tokens = await _api_tokens(session)
    certificates = await _certificates(session)
    snapshot: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": _time(generated_at),
        "key_id": key.key_id,
        "control_plane": {"software": "powernode", "version": __version__},
        "counts": {
            "nodes": len(nodes),
            "instances": len(instances),
            "templates": len(templates),
            "module_versions": len(module_versions),
            "api_tokens": len(api_tokens),
            "certificates": len(certificates),
        },
        "nodes": nodes,
        "instances": instances,
        "templates": templates,
        "module_versions": module_versions,
        "api_tokens": api_tokens,
        "certificates": certificates,
        "drift": await _drift(session),
        "cve_exposure": _not_tracked("CVE exposure", "findings"),
        "autonomy_decisions": _not_tracked("autonomous remediation", "decisions"),
    }
    return sign_snapshot(snapshot, key)


def sign_snapshot(snapshot: dict[str, Any], key: SigningKey) -> dict[str, Any]:
    """`snapshot` with its detached signature block."""
    return {
        "snapshot": snapshot,
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key.key_id,
            "public_key_pem": key.public_key_pem,
            "value": base64.b64encode(key.sign(canonical_json(snapshot))).decode("ascii"),
        },
    }


async def record_snapshot_event(
    session: AsyncSession, ctx: EventContext, document: dict[str, Any]
) -> None:
    """Record `compliance.snapshot`: who took it, its counts, key id and document digest."""
    snapshot = document["snapshot"]
    await record_event(
        session,
        ctx,
        kind="compliance.snapshot",
        subject_type="compliance_snapshot",
        subject_id=None,
        payload={
            "generated_at": snapshot["generated_at"],
            "counts": snapshot["counts"],
            "key_id": snapshot["key_id"],
            "document_sha256": hashlib.sha256(canonical_json(snapshot)).hexdigest(),
        },
    )


# --- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedSnapshot:
    """What a valid snapshot says about itself."""

    generated_at: str
    key_id: str
    counts: dict[str, int]
    document_sha256: str

    def summary(self) -> str:
        c = self.counts
        return (
            f"valid: generated at {self.generated_at}, {c.get('nodes', 0)} nodes, "
            f"{c.get('instances', 0)} instances, {c.get('templates', 0)} templates, "
            f"{c.get('module_versions', 0)} module versions, {c.get('api_tokens', 0)} API "
            f"tokens; signed by key {self.key_id}"
        )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise SnapshotInvalid("the document repeats a key in one object")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise SnapshotInvalid(f"the document contains {name}, which is not JSON")


def parse_document(raw: bytes | str) -> Any:
    """Parse a snapshot file strictly: UTF-8 JSON, no duplicate keys, no NaN or Infinity."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SnapshotInvalid(f"the document is not valid JSON: {exc}") from exc


def _load_public_key(pem: Any, what: str) -> ec.EllipticCurvePublicKey:
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    if not isinstance(pem, bytes):
        raise SnapshotInvalid(f"{what} is not a PEM string")
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SnapshotInvalid(f"{what} is not a readable PEM public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SnapshotInvalid(f"{what} is not an ECDSA P-256 public key")
    return key


def verify_document(
    document: Any, pinned_public_key_pem: bytes | str | None = None
) -> VerifiedSnapshot:
    """Check a parsed snapshot document; raise `SnapshotInvalid` naming the first problem.

    Without a pinned key the embedded public key is used, which proves integrity but not origin;
    with one, the embedded key must be that key.
    """
    if not isinstance(document, dict) or set(document) != {"snapshot", "signature"}:
        raise SnapshotInvalid("the document must be an object with exactly snapshot and signature")
    snapshot, signature = document["snapshot"], document["signature"]
    if not isinstance(snapshot, dict) or not isinstance(signature, dict):
        raise SnapshotInvalid("snapshot and signature must be objects")
    expected = {"algorithm", "key_id", "public_key_pem", "value"}
    if set(signature) != expected:
        raise SnapshotInvalid(
            f"the signature block must have exactly {', '.join(sorted(expected))}"
        )
    if signature["algorithm"] != ALGORITHM:
        raise SnapshotInvalid(f"unsupported signature algorithm {signature['algorithm']!r}")
    public_key = _load_public_key(signature["public_key_pem"], "the embedded public key")
    key_id = key_id_of(public_key)
    if pinned_public_key_pem is not None:
        pinned = _load_public_key(pinned_public_key_pem, "the pinned public key")
        if key_id_of(pinned) != key_id:
            raise SnapshotInvalid(
                f"the snapshot is signed by key {key_id}, not by the pinned key {key_id_of(pinned)}"
            )
    if signature["key_id"] != key_id:
        raise SnapshotInvalid("the signature's key_id does not match its public key")
    if snapshot.get("key_id") != key_id:
        raise SnapshotInvalid(
            f"the snapshot names key {snapshot.get('key_id')!r} but is signed by key {key_id}"
        )
    value = signature["value"]
    if not isinstance(value, str):
        raise SnapshotInvalid("the signature value must be a base64 string")
    try:
        der = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnapshotInvalid("the signature value is not valid base64") from exc
    try:
        signed = canonical_json(snapshot)
    except ValueError as exc:
        raise SnapshotInvalid(f"the snapshot cannot be canonicalized: {exc}") from exc
    try:
        public_key.verify(der, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise SnapshotInvalid(
            "the signature does not match the snapshot: it was modified after signing"
        ) from exc
    counts = snapshot.get("counts")
    generated_at = snapshot.get("generated_at")
    if not isinstance(counts, dict) or not isinstance(generated_at, str):
        raise SnapshotInvalid("the snapshot lacks generated_at or counts")
    return VerifiedSnapshot(
        generated_at=generated_at,
        key_id=key_id,
        counts={k: v for k, v in counts.items() if isinstance(v, int)},
        document_sha256=hashlib.sha256(signed).hexdigest(),
    )
