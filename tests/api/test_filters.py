"""List filters not covered elsewhere: events by time range, nodes by provider account and by
template."""

from __future__ import annotations

import datetime as dt

from tests.api.conftest import START, Api


async def test_events_since_and_until_bound_the_time_of_each_event(api: Api) -> None:
    hour = dt.timedelta(hours=1)
    for i in range(3):
        await api.ok("POST", "/nodes", json={"name": f"n{i}"})
        api.clock.advance(hour)

    async def names(**bounds: dt.datetime) -> list[str]:
        params = {"kind": "node.created", **{k: v.isoformat() for k, v in bounds.items()}}
        events = await api.ok("GET", "/events", params=params)
        return [e["payload"]["name"] for e in events["items"]]

    assert await names(since=START + hour) == ["n1", "n2"]  # inclusive
    assert await names(until=START + hour) == ["n0"]  # exclusive
    assert await names(since=START + hour / 2, until=START + 2 * hour) == ["n1"]
    assert await names(since=START + 3 * hour) == []
    # Another offset names the same instant.
    cet = dt.timezone(dt.timedelta(hours=1))
    assert await names(since=(START + 2 * hour).astimezone(cet)) == ["n2"]


async def test_nodes_filter_by_provider_account_and_by_template(api: Api) -> None:
    aws = await api.ok(
        "POST",
        "/provider-accounts",
        json={"name": "aws", "kind": "aws", "credentials_ref": "env:AWS_PROFILE"},
    )
    gcp = await api.ok(
        "POST",
        "/provider-accounts",
        json={"name": "gcp", "kind": "gcp", "credentials_ref": "env:GCP"},
    )
    web = await api.ok("POST", "/templates", json={"name": "web"})
    db = await api.ok("POST", "/templates", json={"name": "db"})
    for name, account, template in [
        ("a-web", aws, web),
        ("a-db", aws, db),
        ("g-web", gcp, web),
        ("bare", None, None),
    ]:
        spec = {"name": name}
        if account:
            spec["provider_account_id"] = account["id"]
        if template:
            spec["template_id"] = template["id"]
        await api.ok("POST", "/nodes", json=spec)

    async def names(**params: str) -> list[str]:
        return [n["name"] for n in (await api.ok("GET", "/nodes", params=params))["items"]]

    assert await names(provider_account_id=aws["id"]) == ["a-web", "a-db"]
    assert await names(template_id=web["id"]) == ["a-web", "g-web"]
    assert await names(provider_account_id=gcp["id"], template_id=web["id"]) == ["g-web"]
    assert await names(provider_account_id=gcp["id"], template_id=db["id"]) == []
    refused = await api.call("GET", "/nodes", params={"template_id": "web"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "template_id"
