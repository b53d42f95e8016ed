"""The event log API: newest-first paging, following with `after`, causal chains."""

from __future__ import annotations

import uuid

from powernode.events.log import EventContext, record_event
from tests.api.conftest import Api


async def test_events_page_newest_first_and_follow_after_an_id(api: Api) -> None:
    for i in range(5):
        await api.ok("POST", "/nodes", json={"name": f"n{i}"})
    oldest_first = (await api.ok("GET", "/events", params={"kind": "node.created"}))["items"]
    newest = await api.ok(
        "GET", "/events", params={"kind": "node.created", "order": "desc", "limit": 2}
    )
    assert [e["id"] for e in newest["items"]] == [e["id"] for e in oldest_first[::-1][:2]]
    rest = await api.ok(
        "GET",
        "/events",
        params={
            "kind": "node.created",
            "order": "desc",
            "limit": 10,
            "cursor": newest["next_cursor"],
        },
    )
    assert [e["id"] for e in rest["items"]] == [e["id"] for e in oldest_first[::-1][2:]]
    after = await api.ok(
        "GET", "/events", params={"kind": "node.created", "after": oldest_first[2]["id"]}
    )
    assert [e["payload"]["name"] for e in after["items"]] == ["n3", "n4"]


async def test_a_chain_lists_each_event_after_its_cause(api: Api) -> None:
    correlation = uuid.uuid4()
    ctx = EventContext(actor="test", correlation_id=correlation, clock=api.clock)
    async with api.db.transaction() as session:
        root = await record_event(
            session, ctx, kind="job.tick", subject_type="job", subject_id=None
        )
        other_root = await record_event(
            session, ctx, kind="sensor.fired", subject_type="sensor", subject_id=None
        )
        child = await record_event(
            session,
            ctx.caused_by(root.id),
            kind="task.created",
            subject_type="task",
            subject_id=None,
        )
        await record_event(
            session,
            ctx.caused_by(child.id),
            kind="task.lease",
            subject_type="task",
            subject_id=None,
        )
        await record_event(
            session,
            ctx.caused_by(root.id),
            kind="node.provision",
            subject_type="node",
            subject_id=None,
        )
        await record_event(
            session,
            ctx.caused_by(other_root.id),
            kind="node.drain",
            subject_type="node",
            subject_id=None,
        )
    chain = await api.ok("GET", f"/events/chains/{correlation}")
    assert [e["kind"] for e in chain] == [
        "job.tick",
        "task.created",
        "task.lease",
        "node.provision",
        "sensor.fired",
        "node.drain",
    ]
    assert await api.ok("GET", f"/events/chains/{uuid.uuid4()}") == []
