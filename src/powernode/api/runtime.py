"""What `serve` runs besides answering requests: the event stream's tailer, the node side (CA,
heartbeat buffer, task waiters, revocation cache, provider drivers) and, in the embedded
default, the scheduled jobs.

It needs the schema at head. `serve` refuses to start otherwise, but an app can be started on a
database that is unreachable or not yet migrated (`/readyz` then says 503): the runtime then
waits in the background and starts as soon as the schema is at head, and until then the routes
that need it answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from fastapi import FastAPI, Request

from powernode.db.migrate import current_revision, head_revision
from powernode.errors import Unavailable
from powernode.events.stream import EventBroker
from powernode.fleet.claims import TaskWaiters
from powernode.fleet.heartbeats import HeartbeatBuffer
from powernode.pki.runtime import RevocationCache, open_ca, open_signing_authority
from powernode.providers.runtime import ProviderRuntime
from powernode.settings import Settings
from powernode.worker.leader import election_for
from powernode.worker.runner import Worker

log = logging.getLogger(__name__)

RETRY_S = 2.0
_SHARED = ("db", "clock", "ca", "heartbeats", "task_waiters", "revocations", "broker")


class FleetRuntime:
    def __init__(self, app: FastAPI, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.started = False
        self._waiter: asyncio.Task[None] | None = None
        self._jobs: list[asyncio.Task[Any]] = []

    async def start_when_ready(self) -> None:
        """Start now if the schema is at head, else as soon as it is (in the background)."""
        if await self._at_head():
            await self._start()
        else:
            log.warning("database not reachable or not at head: runtime waits for it")
            self._waiter = asyncio.create_task(self._wait_then_start(), name="runtime-waiter")

    async def _at_head(self) -> bool:
        try:
            return await current_revision(self.app.state.db.engine) == head_revision()
        except Exception:
            return False

    async def _wait_then_start(self) -> None:
        while not await self._at_head():  # noqa: ASYNC110 - polling the database, not an event
            await asyncio.sleep(RETRY_S)
        await self._start()

    async def _start(self) -> None:
        state, settings = self.app.state, self.settings
        state.broker = EventBroker(state.db)
        await state.broker.start()
        state.ca = await open_ca(state.db, settings, create=True)
        state.signing = await open_signing_authority(state.db, settings)
        state.signing_roots = (state.signing.root_certificate,)
        state.heartbeats = HeartbeatBuffer(state.db, state.clock, settings)
        await state.heartbeats.start()
        state.task_waiters = TaskWaiters()
        state.broker.listeners.append(state.task_waiters.on_events)
        state.revocations = RevocationCache(state.db)
        state.providers = ProviderRuntime(state.db, settings, state.ca, state.revocations)
        node_state = state.node_app.state
        for name in _SHARED:
            setattr(node_state, name, getattr(state, name))
        node_state.settings = settings
        if settings.runs_jobs_in_serve:
            election = election_for(settings.effective_database_url, settings.data_dir)
            worker = Worker(state.db, settings, state.clock, election)
            self._jobs.append(asyncio.create_task(worker.run_forever(), name="embedded-worker"))
        self.started = True
        state.runtime_started = node_state.runtime_started = True

    async def stop(self) -> None:
        if self._waiter is not None:
            self._waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._waiter
        for job in self._jobs:
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        if self.started:
            await self.app.state.heartbeats.stop()
            await self.app.state.broker.stop()


def require_runtime(request: Request) -> None:
    """A dependency for routes that need the runtime: 503 until it runs."""
    if not getattr(request.app.state, "runtime_started", False):
        raise Unavailable(
            "the control plane is starting: its database is not reachable or not migrated to "
            "the head revision yet (see /readyz)"
        )
