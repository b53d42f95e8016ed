"""GET /metrics: Prometheus text with request latency by route template and fleet gauges."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from powernode.api import metrics
from powernode.api.app import create_app
from powernode.fleet.states import MachineState, TaskState
from powernode.settings import Settings
from tests.api.conftest import Api

DURATION = "powernode_http_request_duration_seconds"


@pytest.fixture
def metered(api: Api) -> Api:
    """The `api` app with metrics installed (before it served a request, as Starlette requires)."""
    metrics.install(api.app)
    return api


async def scrape(api: Api) -> dict[str, list[Sample]]:
    """Scrape /metrics without a token and return the samples of each metric family by name."""
    response = await api.http.get("/metrics")
    assert response.status_code == 200, response.text
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def bare_app(data_dir: Path) -> FastAPI:
    """An app that is never started: enough to check what `install` registers."""
    return create_app(Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir}/unused.db"))


def by_label(samples: list[Sample], label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples}


async def test_nodes_are_counted_by_state_with_zero_for_every_other_state(metered: Api) -> None:
    for name in ("web-1", "web-2", "web-3"):
        await metered.ok("POST", "/nodes", json={"name": name})
    await metered.ok("POST", "/nodes/web-1/actions/provision")
    families = await scrape(metered)
    nodes = by_label(families["powernode_nodes"], "state")
    assert nodes == {
        str(s): {"pending": 2.0, "provisioning": 1.0}.get(s, 0.0) for s in MachineState
    }
    assert by_label(families["powernode_instances"], "state") == dict.fromkeys(
        map(str, MachineState), 0.0
    )
    assert by_label(families["powernode_tasks"], "state") == dict.fromkeys(map(str, TaskState), 0.0)


async def test_request_durations_are_labelled_by_route_template_not_raw_path(
    metered: Api,
) -> None:
    await metered.ok("POST", "/nodes", json={"name": "web-1"})
    await metered.ok("GET", "/nodes/web-1")
    assert (await metered.call("GET", "/nodes/missing")).status_code == 404
    assert (await metered.http.get("/no/such/path")).status_code == 404
    assert (await metered.http.get("/api/v1/docs/static/swagger-ui.css")).status_code == 200
    samples = (await scrape(metered))[DURATION]
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in samples
        if s.name == f"{DURATION}_count"
    }
    assert counts[("/api/v1/nodes", "POST", "2xx")] == 1
    assert counts[("/api/v1/nodes/{node}", "GET", "2xx")] == 1
    assert counts[("/api/v1/nodes/{node}", "GET", "4xx")] == 1
    assert counts[(metrics.UNMATCHED, "GET", "4xx")] == 1
    assert counts[("/api/v1/docs/static", "GET", "2xx")] == 1
    assert not [s for s in samples if "web-1" in s.labels["route"] or "/no/" in s.labels["route"]]


async def test_events_last_hour_match_the_recorded_events_and_age_out(metered: Api) -> None:
    await metered.ok("POST", "/nodes", json={"name": "web-1"})
    await metered.ok("POST", "/nodes/web-1/actions/provision")
    await metered.ok("POST", "/nodes/web-1/actions/fail", json={"reason": "disk on fire"})
    recorded = Counter(
        (e["kind"], e["severity"])
        for e in (await metered.ok("GET", "/events", params={"limit": 1000}))["items"]
    )
    assert ("node.created", "routine") in recorded
    assert any(severity == "critical" for _, severity in recorded)

    events = (await scrape(metered))["powernode_fleet_events_last_hour"]
    assert {(s.labels["kind"], s.labels["severity"]): s.value for s in events} == recorded

    metered.clock.advance(metrics.EVENTS_WINDOW + dt.timedelta(seconds=1))
    await metered.ok("POST", "/nodes", json={"name": "web-2"})
    events = (await scrape(metered))["powernode_fleet_events_last_hour"]
    assert {(s.labels["kind"], s.labels["severity"]): s.value for s in events} == {
        ("node.created", "routine"): 1.0
    }


async def test_metrics_are_prometheus_text_without_a_token_and_outside_the_schema(
    metered: Api,
) -> None:
    response = await metered.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert response.text.startswith("# HELP ")
    schema = await metered.ok("GET", "/openapi.json")
    assert "/metrics" not in schema["paths"]


def test_each_app_keeps_its_own_registry(tmp_path: Path) -> None:
    """Two apps in one process register the same metric names without colliding."""
    apps = [bare_app(tmp_path / str(i)) for i in range(2)]
    for app in apps:
        metrics.install(app)
        metrics.install(app)  # a second install is a no-op, not a duplicate registration
    first, second = (app.state.metrics_registry for app in apps)
    assert first is not second
    assert [getattr(r, "path", None) for r in apps[0].routes].count("/metrics") == 1


async def test_an_app_that_raises_is_recorded_as_a_server_error(tmp_path: Path) -> None:
    """A request whose handler raises counts as 5xx under its route template."""
    app = bare_app(tmp_path)
    metrics.install(app)

    @app.get("/boom/{what}")
    async def boom(what: str) -> None:
        raise RuntimeError(what)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/boom/now")).status_code == 500
    registry = app.state.metrics_registry
    labels = {"route": "/boom/{what}", "method": "GET", "status": "5xx"}
    assert registry.get_sample_value(f"{DURATION}_count", labels) == 1


async def test_job_runs_and_their_latest_duration_are_gauges(metered: Api, tmp_path: Path) -> None:
    from powernode.worker.jobs import get_job
    from powernode.worker.leader import FileLockElection
    from powernode.worker.runner import Worker

    settings = Settings(data_dir=tmp_path, database_url=metered.db.url)
    worker = Worker(metered.db, settings, metered.clock, FileLockElection(tmp_path / "locks"))
    await worker.run_once(get_job("reaper"))
    await worker.run_once(get_job("reaper"))
    families = await scrape(metered)
    runs = {
        (s.labels["job"], s.labels["outcome"]): s.value
        for s in families["powernode_job_runs_last_hour"]
    }
    assert runs == {("reaper", "succeeded"): 2}
    assert set(by_label(families["powernode_job_last_run_duration_seconds"], "job")) == {"reaper"}


async def test_heartbeat_intake_is_counted(metered: Api) -> None:
    import uuid

    beats = metered.app.state.heartbeats
    for _ in range(3):
        beats.record(uuid.uuid4(), "test", {})
    families = await scrape(metered)
    assert families["powernode_heartbeats_received"][0].value == 3
    assert families["powernode_heartbeat_interval_seconds"][0].value == 10
