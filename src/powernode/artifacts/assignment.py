"""Assigning module versions to a node: the gate and the agent's `apply_modules` payload.

An operator asks for `{"modules": [{"name", "version"}]}`; before the task is queued every
version must have a stored signature that satisfies its module's trust policy
(`service.verify_version`), else the request is refused with the reasons (403). The payload the
agent receives names, per module, where to pull it (the control plane's `/v2` on the node API,
which the agent reaches with its certificate), the signed manifest digest, the policy and
signing roots, and every file's sha256 and fs-verity digest (see agent/modules/request.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from powernode.artifacts.package import version_tag
from powernode.artifacts.service import verify_version
from powernode.artifacts.trust import UntrustedArtifact
from powernode.events.log import EventContext, record_event
from powernode.fleet.models import Node
from powernode.modules import service as modules
from powernode.modules.entries import FILE
from powernode.modules.store import ContentStore
from powernode.pki.runtime import node_urls
from powernode.settings import Settings


async def apply_modules_payload(
    session: AsyncSession,
    store: ContentStore,
    settings: Settings,
    requested: Sequence[dict[str, Any]],
    *,
    trusted_roots: Sequence[x509.Certificate] = (),
) -> dict[str, Any]:
    """The agent's payload for `requested` module versions; UntrustedArtifact if any fails."""
    registry = urlsplit(node_urls(settings)[0]).netloc
    roots = [c.public_bytes(serialization.Encoding.PEM).decode() for c in trusted_roots]
    modules_out = []
    for item in requested:
        name, version = item["name"], item["version"]
        result = await verify_version(session, store, name, version, trusted_roots=trusted_roots)
        if not result.decision.allowed or result.digest is None or result.policy is None:
            reasons = result.decision.reasons or ["no signed artifact"]
            raise UntrustedArtifact(
                f"module {name}@{version} cannot be assigned: {'; '.join(reasons)}",
                reasons=reasons,
            )
        row = (await modules.get_version(session, name, version))[1]
        files = {
            e.path: {"sha256": e.sha256, "verity": _verity(e.verity)}
            for e in modules.entries_of(store, row.entries_sha256)
            if e.type == FILE
        }
        modules_out.append(
            {
                "name": name,
                "version": version,
                "reference": f"{registry}/modules/{name}:{version_tag(version)}",
                "digest": result.digest,
                "policy": result.policy.to_dict(),
                "roots": roots,
                "files": files,
            }
        )
    return {"modules": modules_out, "insecure": False}


def _verity(value: str | None) -> str | None:
    if value is None:
        return None
    return value if value.startswith("sha256:") else f"sha256:{value}"


async def record_desired_modules(
    session: AsyncSession, ctx: EventContext, node_id: uuid.UUID, payload: dict[str, Any]
) -> None:
    """The node should now run these digests; its heartbeats are compared with them (drift)."""
    node = await session.get(Node, node_id, options=[raiseload(Node.labels)])
    if node is None:
        return
    node.desired_modules = {m["name"]: m["digest"] for m in payload["modules"]}
    node.module_drift = None  # unknown until the agent reports
    await record_event(
        session,
        ctx,
        kind="node.modules_assigned",
        subject_type="node",
        subject_id=node_id,
        payload={"modules": node.desired_modules},
    )


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def as_seen_by_node(
    task: dict[str, Any], settings: Settings, node_host: str | None
) -> dict[str, Any]:
    """An `apply_modules` task as handed to one agent: references to this control plane's
    registry name the address that agent reached the node API at (a QEMU guest reaches it at
    its forwarded guest address, not at the control plane's own), so the agent recognises the
    registry as its control plane and pulls with its mTLS identity."""
    if task.get("kind") != "apply_modules" or not node_host or not _HOST_PORT.match(node_host):
        return task
    ours = urlsplit(node_urls(settings)[0]).netloc
    if node_host == ours:
        return task
    payload = dict(task.get("payload") or {})
    modules = []
    for module in payload.get("modules", []):
        reference = str(module.get("reference", ""))
        if reference.startswith(f"{ours}/"):
            module = {**module, "reference": f"{node_host}/{reference[len(ours) + 1 :]}"}
        modules.append(module)
    payload["modules"] = modules
    return {**task, "payload": payload}
