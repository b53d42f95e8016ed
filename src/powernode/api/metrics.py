"""Prometheus metrics: request latency by route template, and fleet gauges read at scrape time.

`install(app)` adds both to an app. Metrics live in a registry of the app's own
(`app.state.metrics_registry`), never prometheus-client's global one, so several apps in one
process keep separate counts.

Cardinality stays bounded: requests are labelled with the route *template*
(`/api/v1/nodes/{node}`, never the concrete path; `<unmatched>` when no route matched), a known
HTTP method (else `OTHER`) and a status class (`2xx`...). Fleet gauges have one series per
state of the enums in `powernode.fleet.states`, and per event kind and severity.

Fleet gauges are computed per scrape: the async handler runs one `GROUP BY` per table in one
read transaction (a consistent snapshot), then renders the numbers together with the app
registry. prometheus-client's `collect()` is synchronous, so the database is never touched from
inside it, and no thread is involved.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powernode.clock import Clock
from powernode.db.engine import Database
from powernode.events.models import FleetEvent
from powernode.fleet.heartbeats import HeartbeatBuffer
from powernode.fleet.models import Node, NodeInstance, Task
from powernode.fleet.states import MachineState, TaskState

__all__ = ["EVENTS_WINDOW", "UNMATCHED", "install"]

UNMATCHED = "<unmatched>"
"""Route label of requests that matched no route (404s on unknown paths)."""

EVENTS_WINDOW = dt.timedelta(hours=1)
"""How far back `powernode_fleet_events_last_hour` counts; `occurred_at` is indexed."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install(app: FastAPI) -> None:
    """Add the request-latency middleware and `GET /metrics` to `app`; a second call does nothing.

    Call it before the app serves its first request (Starlette refuses middleware after that).
    """
    if getattr(app.state, "metrics_registry", None) is not None:
        return
    registry = CollectorRegistry()
    duration = Histogram(
        "powernode_http_request_duration_seconds",
        "Time from receiving an HTTP request to sending its whole response.",
        ["route", "method", "status"],
        registry=registry,
    )
    app.state.metrics_registry = registry
    app.add_middleware(RequestDurationMiddleware, histogram=duration, routes=RouteTemplates(app))
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        include_in_schema=False,
        response_class=Response,
        tags=["health"],
    )


async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the app registry plus fleet gauges read now.

    No token is required: by convention Prometheus scrapers do not carry the operator API token.
    Expose this path only to the monitoring network (e.g. block `/metrics` at the reverse proxy
    for everyone else); it reveals fleet sizes and event rates, not node names or payloads.
    """
    registry: CollectorRegistry = request.app.state.metrics_registry
    db: Database = request.app.state.db
    clock: Clock = request.app.state.clock
    async with db.read_sessions() as session, session.begin():
        snapshot = await read_fleet(session, since=clock.now() - EVENTS_WINDOW)
    families = snapshot.families()
    beats = getattr(request.app.state, "heartbeats", None)
    if beats is not None:
        families += heartbeat_families(beats)
    body = generate_latest(_Scrape(registry, families))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def heartbeat_families(beats: HeartbeatBuffer) -> list[Metric]:
    """This process's heartbeat intake: beats received, batched flushes and rows they wrote."""
    received = CounterMetricFamily(
        "powernode_heartbeats_received", "Agent heartbeats received by this process."
    )
    received.add_metric([], beats.received)
    flushes = CounterMetricFamily(
        "powernode_heartbeat_flushes", "Coalesced heartbeat batches written by this process."
    )
    flushes.add_metric([], beats.flushes)
    rows = CounterMetricFamily(
        "powernode_heartbeat_rows_written",
        "Node lease rows written by heartbeat flushes (at most one per node per flush).",
    )
    rows.add_metric([], beats.rows_written)
    interval = GaugeMetricFamily(
        "powernode_heartbeat_interval_seconds", "Heartbeat interval handed to agents now."
    )
    interval.add_metric([], beats.interval_s())
    return [received, flushes, rows, interval]


@dataclass(frozen=True)
class FleetSnapshot:
    """Counts read from the database for one scrape."""

    nodes: Mapping[str, int]
    instances: Mapping[str, int]
    tasks: Mapping[str, int]
    events_last_hour: Mapping[tuple[str, str], int]
    job_runs: Mapping[tuple[str, str], int]
    job_last_duration: Mapping[str, float]

    def families(self) -> list[Metric]:
        """The snapshot as metric families; every enum state appears, 0 when none."""
        events = GaugeMetricFamily(
            "powernode_fleet_events_last_hour",
            "Fleet events recorded in the last hour, by kind and severity.",
            labels=["kind", "severity"],
        )
        for (kind, severity), count in sorted(self.events_last_hour.items()):
            events.add_metric([kind, severity], count)
        runs = GaugeMetricFamily(
            "powernode_job_runs_last_hour",
            "Scheduled job runs in the last hour, by job and outcome.",
            labels=["job", "outcome"],
        )
        for (name, outcome), count in sorted(self.job_runs.items()):
            runs.add_metric([name, outcome], count)
        durations = GaugeMetricFamily(
            "powernode_job_last_run_duration_seconds",
            "Duration of each job's latest run in the last hour.",
            labels=["job"],
        )
        for name, seconds in sorted(self.job_last_duration.items()):
            durations.add_metric([name], seconds)
        return [
            _by_state("powernode_nodes", "Nodes by observed state.", MachineState, self.nodes),
            _by_state(
                "powernode_instances",
                "Node instances by observed state.",
                MachineState,
                self.instances,
            ),
            _by_state(
                "powernode_tasks",
                "Tasks by state; final states count task outcomes.",
                TaskState,
                self.tasks,
            ),
            events,
            runs,
            durations,
        ]


async def read_fleet(session: AsyncSession, *, since: dt.datetime) -> FleetSnapshot:
    """One `GROUP BY` per table (each served by a state or `occurred_at` index)."""

    async def by_state(model: type[Node] | type[NodeInstance] | type[Task]) -> dict[str, int]:
        rows = await session.execute(select(model.state, func.count()).group_by(model.state))
        return {state: count for state, count in rows}

    events = await session.execute(
        select(FleetEvent.kind, FleetEvent.severity, func.count())
        .where(FleetEvent.occurred_at > since)
        .group_by(FleetEvent.kind, FleetEvent.severity)
    )
    job_runs: dict[tuple[str, str], int] = {}
    last_duration: dict[str, float] = {}
    jobs = await session.execute(
        select(FleetEvent.kind, FleetEvent.payload)
        .where(FleetEvent.occurred_at > since, FleetEvent.subject_type == "job")
        .order_by(FleetEvent.id)
    )
    for kind, payload in jobs:
        name = kind.removeprefix("job.")
        key = (name, str(payload.get("outcome", "unknown")))
        job_runs[key] = job_runs.get(key, 0) + 1
        last_duration[name] = float(payload.get("duration_s", 0.0))
    return FleetSnapshot(
        job_runs=job_runs,
        job_last_duration=last_duration,
        nodes=await by_state(Node),
        instances=await by_state(NodeInstance),
        tasks=await by_state(Task),
        events_last_hour={(kind, severity): n for kind, severity, n in events},
    )


def _by_state(
    name: str, documentation: str, states: type[StrEnum], counts: Mapping[str, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    # A state missing from the enum still shows, rather than being silently dropped.
    for state, count in ({str(s): 0 for s in states} | dict(counts)).items():
        family.add_metric([state], count)
    return family


@dataclass(frozen=True)
class _Scrape:
    """One scrape: the app registry's metrics followed by this scrape's fleet families."""

    registry: CollectorRegistry
    fleet: list[Metric]

    def collect(self) -> Iterable[Metric]:
        yield from self.registry.collect()
        yield from self.fleet


class RequestDurationMiddleware:
    """Pure-ASGI middleware observing each HTTP request's duration in `histogram`."""

    def __init__(self, app: ASGIApp, histogram: Histogram, routes: RouteTemplates) -> None:
        self.app = app
        self.histogram = histogram
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Routing rewrites the scope (root_path, path_params); keep what matching needs.
        request = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", "")}
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before starting a response

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            route = self.routes.template(scope.get("route"), request)
            self.histogram.labels(route=route, method=method, status=f"{status // 100}xx").observe(
                time.perf_counter() - start
            )


class RouteTemplates:
    """The full template (router prefixes included) of the route that served a request.

    FastAPI leaves the matched API route in `scope["route"]`, but since 0.137 that route's `path`
    is relative to its router; `iter_route_contexts` gives every route's full path. Mounts
    (the docs' static files) are not left in the scope, so they are matched by path.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._full_paths: dict[int, tuple[BaseRoute, str]] = {}
        self._mounts: list[tuple[Mount, str]] | None = None

    def template(self, route: object, request: Scope) -> str:
        if isinstance(route, BaseRoute):
            if (found := self._full_path(route)) is not None:
                return found
            self._refresh()  # a route added after the last refresh
            return self._full_path(route) or UNMATCHED
        if self._mounts is None:
            self._refresh()
        for mount, path in self._mounts or ():
            if mount.matches(request)[0] is Match.FULL:
                return path
        return UNMATCHED

    def _full_path(self, route: BaseRoute) -> str | None:
        entry = self._full_paths.get(id(route))
        return entry[1] if entry is not None and entry[0] is route else None

    def _refresh(self) -> None:
        full_paths: dict[int, tuple[BaseRoute, str]] = {}
        mounts: list[tuple[Mount, str]] = []
        for context in iter_route_contexts(self.app.routes):
            if not context.path:
                continue
            full_paths[id(context.original_route)] = (context.original_route, context.path)
            if isinstance(context.route, Mount):
                mounts.append((context.route, context.path))
        self._full_paths, self._mounts = full_paths, mounts
