"""Compliance snapshots, service level on SQLite and PostgreSQL: what a snapshot holds, that its
signature catches any change, how the signing key is kept, and that reading stays O(1) queries."""

from __future__ import annotations

import copy
import datetime as dt
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection

from powernode.auth.models import ApiToken
from powernode.auth.roles import Role
from powernode.auth.tokens import TokenCreate, create_token
from powernode.clock import FrozenClock
from powernode.db.engine import Database
from powernode.events.compliance import (
    SigningKey,
    SnapshotInvalid,
    build_snapshot,
    canonical_json,
    load_or_create_signing_key,
    parse_document,
    record_snapshot_event,
    sign_snapshot,
    verify_document,
)
from powernode.events.log import EventContext
from powernode.events.models import FleetEvent
from powernode.fleet.instances import InstanceCreate, create_instance
from powernode.fleet.kinds import ModuleRef
from powernode.fleet.models import Node, NodeLabel
from powernode.fleet.nodes import NodeCreate, create_node
from powernode.modules.models import Module, ModuleVersion
from powernode.providers.models import ProviderAccount
from powernode.templates.service import TemplateCreate, create_template

AT = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Seeded:
    token_secrets: list[str]
    template_name: str


def ctx() -> EventContext:
    return EventContext(actor="test", clock=FrozenClock(AT))


async def seed(db: Database) -> Seeded:
    """A small fleet: a provider account, a module version, a template, two nodes, an instance
    and two tokens."""
    secrets: list[str] = []
    async with db.transaction() as session:
        account = ProviderAccount(
            name="lab", kind="local", settings={}, created_at=AT, updated_at=AT
        )
        module = Module(name="base", description="", created_at=AT)
        session.add_all([account, module])
        await session.flush()
        session.add(
            ModuleVersion(
                module_id=module.id,
                version="1.0.0",
                spec={},
                entries_sha256="ab" * 32,
                file_count=3,
                total_bytes=1234,
                created_at=AT,
                created_by="test",
            )
        )
        template = await create_template(
            session,
            ctx(),
            TemplateCreate(name="web", modules=[ModuleRef(name="base", version="1.0.0")]),
        )
        await create_node(
            session,
            ctx(),
            NodeCreate(
                name="node-a",
                template_id=template.id,
                provider_account_id=account.id,
                labels={"env": "prod", "tier": "web"},
            ),
        )
        await create_node(session, ctx(), NodeCreate(name="node-b", labels={"env": "dev"}))
        await create_instance(
            session, ctx(), InstanceCreate(node="node-a", name="vm-1", kind="vm", spec={})
        )
        for role in (Role.ADMIN, Role.VIEWER):
            _, secret = await create_token(session, ctx(), TokenCreate(name=f"t-{role}", role=role))
            secrets.append(secret)
    return Seeded(token_secrets=secrets, template_name="web")


async def snapshot_of(db: Database, key: SigningKey) -> dict[str, Any]:
    async with db.read_sessions() as session:
        return await build_snapshot(session, key, AT)


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


async def test_snapshot_lists_the_fleet_and_verifies(database: Database, key: SigningKey) -> None:
    """A fresh snapshot holds every node, instance, template, module version and token."""
    await seed(database)
    document = await snapshot_of(database, key)
    result = verify_document(document)
    snap = document["snapshot"]
    assert result.key_id == key.key_id == snap["key_id"] == document["signature"]["key_id"]
    assert snap["generated_at"] == "2026-11-01T12:00:00.000000Z"
    assert snap["counts"] == {
        "nodes": 2,
        "instances": 1,
        "templates": 1,
        "module_versions": 1,
        "api_tokens": 2,
        "certificates": 0,
    }
    node_a = snap["nodes"][0]
    assert node_a["name"] == "node-a"
    assert node_a["labels"] == {"env": "prod", "tier": "web"}
    assert node_a["template"]["name"] == "web"
    assert node_a["provider_account"]["name"] == "lab"
    assert (node_a["state"], node_a["desired_state"], node_a["version"]) == (
        "pending",
        "running",
        1,
    )
    assert snap["nodes"][1]["template"] is None
    assert snap["templates"][0]["modules"] == [{"name": "base", "version": "1.0.0"}]
    assert snap["module_versions"][0] == {
        "id": snap["module_versions"][0]["id"],
        "name": "base",
        "version": "1.0.0",
        "entries_sha256": "ab" * 32,
        "file_count": 3,
        "total_bytes": 1234,
        "created_at": "2026-11-01T12:00:00.000000Z",
        "created_by": "test",
    }
    assert snap["certificates"] == []
    assert snap["drift"] == {"status": "tracked", "drifted": 0, "nodes": []}
    for section in ("cve_exposure", "autonomy_decisions"):
        assert snap[section]["status"] == "not-tracked"
    assert "valid: generated at 2026-11-01T12:00:00.000000Z, 2 nodes" in result.summary()


async def test_snapshot_holds_no_token_secret_or_hash(database: Database, key: SigningKey) -> None:
    """Token metadata only: neither the secrets nor their stored hashes appear anywhere."""
    seeded = await seed(database)
    document = await snapshot_of(database, key)
    text = json.dumps(document)
    async with database.read_sessions() as session:
        hashes = list(await session.scalars(select(ApiToken.secret_hash)))
    assert hashes
    for secret in seeded.token_secrets:
        assert secret not in text
        assert secret.split("_", 2)[2] not in text  # the secret part may itself hold "_"
    for digest in hashes:
        assert digest not in text
    assert "secret" not in text


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


TAMPERING = {
    "node state": _set(("snapshot", "nodes", 0, "state"), "ready"),
    "label": _set(("snapshot", "nodes", 0, "labels", "env"), "dev"),
    "added label": _set(("snapshot", "nodes", 1, "labels", "extra"), "x"),
    "generated_at": _set(("snapshot", "generated_at"), "2026-11-01T12:00:00.000001Z"),
    "count": _set(("snapshot", "counts", "nodes"), 3),
    "count as float": _set(("snapshot", "counts", "nodes"), 2.0),
    "token role": _set(("snapshot", "api_tokens", 1, "role"), "admin"),
    "removed node": lambda d: d["snapshot"]["nodes"].pop(),
    "signature value": _set(("signature", "value"), "AAAA"),
    "signature key id": _set(("signature", "key_id"), "00" * 32),
    "algorithm": _set(("signature", "algorithm"), "ECDSA-P384-SHA384"),
    "extra top-level key": _set(("comment",), "fine"),
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
async def test_any_change_breaks_verification(
    database: Database, key: SigningKey, change: Callable[[dict[str, Any]], None]
) -> None:
    """Changing any single field of a signed snapshot makes it fail to verify."""
    await seed(database)
    document = await snapshot_of(database, key)
    verify_document(copy.deepcopy(document))
    change(document)
    with pytest.raises(SnapshotInvalid):
        verify_document(document)


async def test_another_keys_signature_fails(database: Database, key: SigningKey) -> None:
    """A signature block made by another key does not verify the original snapshot."""
    await seed(database)
    document = await snapshot_of(database, key)
    other = SigningKey.generate()
    document["signature"] = sign_snapshot(document["snapshot"], other)["signature"]
    with pytest.raises(SnapshotInvalid, match="names key"):
        verify_document(document)


async def test_resigned_snapshot_fails_against_the_pinned_key(
    database: Database, key: SigningKey
) -> None:
    """Re-signing a forged snapshot with another key passes only without a pinned key."""
    await seed(database)
    document = await snapshot_of(database, key)
    verify_document(document, key.public_key_pem)
    other = SigningKey.generate()
    forged = copy.deepcopy(document["snapshot"])
    forged["nodes"][0]["state"] = "ready"
    forged["key_id"] = other.key_id
    forgery = sign_snapshot(forged, other)
    verify_document(forgery)  # integrity holds; origin is what the pin proves
    with pytest.raises(SnapshotInvalid, match="not by the pinned key"):
        verify_document(forgery, key.public_key_pem)
    with pytest.raises(SnapshotInvalid, match="not by the pinned key"):
        verify_document(document, other.public_key_pem)


def test_parse_rejects_malformed_json() -> None:
    """Truncated JSON, duplicate keys and NaN are refused before any signature check."""
    for raw in (b'{"snapshot": {', b'{"a": 1, "a": 2}', b'{"a": NaN}', b"\xff\xfe"):
        with pytest.raises(SnapshotInvalid):
            parse_document(raw)
    with pytest.raises(SnapshotInvalid):
        verify_document(parse_document(b"[]"))


async def test_file_round_trip_and_byte_flips(database: Database, key: SigningKey) -> None:
    """The pretty-printed file verifies; flipping a byte inside a value makes it fail."""
    await seed(database)
    document = await snapshot_of(database, key)
    raw = json.dumps(document, indent=2, ensure_ascii=False).encode()
    verify_document(parse_document(raw))
    tampered = raw.replace(b'"node-a"', b'"node-A"', 1)
    assert tampered != raw
    with pytest.raises(SnapshotInvalid):
        verify_document(parse_document(tampered))


def test_canonical_json_is_sorted_compact_utf8() -> None:
    """Sorted keys, no whitespace, non-ASCII kept as UTF-8."""
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def test_signing_key_is_created_once_with_private_modes(tmp_path: Path) -> None:
    """First use creates keys/ 0700, the private key 0600 and the public key 0644; later uses
    load the same key."""
    key = load_or_create_signing_key(tmp_path)
    keys = tmp_path / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "compliance-signing.pem").stat().st_mode) == 0o600
    public = keys / "compliance-signing.pub.pem"
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert public.read_text() == key.public_key_pem
    assert load_or_create_signing_key(tmp_path).key_id == key.key_id
    assert not list(keys.glob("*.tmp"))


async def test_snapshot_event_records_counts_key_and_digest(
    database: Database, key: SigningKey
) -> None:
    """`compliance.snapshot` names the actor, the counts, the key and the document digest."""
    await seed(database)
    document = await snapshot_of(database, key)
    async with database.transaction() as session:
        await record_snapshot_event(session, ctx(), document)
    async with database.read_sessions() as session:
        row = await session.scalar(
            select(FleetEvent).where(FleetEvent.kind == "compliance.snapshot")
        )
    assert row is not None
    assert row.actor == "test"
    assert row.payload["key_id"] == key.key_id
    assert row.payload["counts"]["nodes"] == 2
    assert row.payload["document_sha256"] == verify_document(document).document_sha256


async def test_reading_takes_a_constant_number_of_queries(
    database: Database, key: SigningKey
) -> None:
    """300 labelled nodes are read in as many queries as 2 (no query per node)."""

    async def count_queries() -> int:
        statements: list[str] = []

        def on_execute(conn: Connection, cursor: Any, sql: str, *args: Any) -> None:
            statements.append(sql)

        engine = database.read_engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_execute)
        try:
            await snapshot_of(database, key)
        finally:
            event.remove(engine, "before_cursor_execute", on_execute)
        return len(statements)

    await seed(database)
    few = await count_queries()
    async with database.transaction() as session:
        for i in range(300):
            session.add(
                Node(
                    name=f"bulk-{i:03d}",
                    arch="amd64",
                    state="ready",
                    desired_state="running",
                    created_at=AT,
                    updated_at=AT,
                    state_changed_at=AT,
                    labels=[NodeLabel(key="env", value="prod"), NodeLabel(key="n", value=str(i))],
                )
            )
    document = await snapshot_of(database, key)
    assert document["snapshot"]["counts"]["nodes"] == 302
    assert document["snapshot"]["nodes"][100]["labels"]["env"] == "prod"
    assert await count_queries() == few


async def test_issued_certificates_are_listed_with_their_revocation(
    database: Database, key: SigningKey
) -> None:
    from powernode.pki.models import NodeCertificate

    async with database.transaction() as session:
        node = await create_node(session, ctx(), NodeCreate(name="certified"))
        start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
        for serial, revoked in (("a1", None), ("b2", start + dt.timedelta(hours=1))):
            session.add(
                NodeCertificate(
                    serial=serial,
                    node_id=node.id,
                    fingerprint_sha256="f" * 64,
                    not_before=start,
                    not_after=start + dt.timedelta(days=1),
                    issued_at=start,
                    revoked_at=revoked,
                    revocation_reason="key compromise" if revoked else None,
                )
            )
    snap = (await snapshot_of(database, key))["snapshot"]
    assert snap["counts"]["certificates"] == 2
    by_serial = {c["serial"]: c for c in snap["certificates"]}
    assert by_serial["a1"]["revoked"] is False
    assert by_serial["b2"]["revoked"] is True
    assert by_serial["b2"]["revocation_reason"] == "key compromise"
    assert by_serial["a1"]["not_after"] == "2026-11-02T00:00:00.000000Z"
