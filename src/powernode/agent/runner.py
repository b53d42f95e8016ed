"""The agent's main loop: get credentials, then heartbeat, lease and renew concurrently.

`Agent.run()`:

1. prepares the state directory and loads the stored credentials; if there are none (or they
   expired) it discovers a seed and enrolls (`enrollment.Enroller`);
2. runs three loops over one `Session`: heartbeats (at the interval the server names), the
   worker (`worker.Worker`: lease, run, report), and renewal (at about 2/3 of the certificate's
   lifetime, +-10%; re-enrollment when the certificate expired or was refused);
3. on SIGTERM or SIGINT (`request_stop()`), stops leasing, gives the current task its grace
   period, cancels the other loops and returns 0.

Control-plane outages never end the run: every call retries with backoff and failover. Only an
unusable state directory (StateError) or, with `once`, any failure, ends it with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import random
import signal
import time
from pathlib import Path
from typing import Any

from powernode.agent import executors as executor_registry
from powernode.agent.aio import Stopped, until_stopped
from powernode.agent.backoff import Backoff
from powernode.agent.config import DEFAULT_HEARTBEAT_S, AgentConfig
from powernode.agent.enrollment import Enroller, KeyMaker
from powernode.agent.errors import AgentError, CertificateRejected, StateError
from powernode.agent.executors import AgentControl, Executor
from powernode.agent.identity import discover as discover_identity
from powernode.agent.pki import key_and_csr_in_child
from powernode.agent.seed import Discover
from powernode.agent.session import Session
from powernode.agent.state import Credentials, StateDir
from powernode.agent.worker import Worker

log = logging.getLogger(__name__)

ONCE_ROUNDS = 3
"""With --once, failover rounds per call before giving up."""
MAX_SLEEP_S = 3600.0
"""The renewal loop re-checks the clock at least this often (suspend, clock jumps)."""


def active_modules(state_dir: Path) -> dict[str, str]:
    """{name: digest} of the active module generation (what the control plane compares with
    what it assigned, to mark drift); read from `modules/current/generation.json` with the
    standard library only, so an idle agent loads nothing of the module machinery."""
    try:
        doc = json.loads((state_dir / "modules" / "current" / "generation.json").read_text())
        return {str(m["name"]): str(m["digest"]) for m in doc.get("modules", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


class Agent:
    """One agent run over a state directory; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        discover: Discover | None = None,
        keymaker: KeyMaker = key_and_csr_in_child,
        executors: dict[str, Executor] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.state = StateDir(config.state_dir)
        self.control = AgentControl()
        self._executors = executors if executors is not None else executor_registry.load()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._enroller = Enroller(
            self.state,
            config.discovery(),
            discover or discover_identity,
            keymaker,
            user_agent=config.user_agent,
        )
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self._heartbeat_s = DEFAULT_HEARTBEAT_S

    def request_stop(self) -> None:
        """Begin a clean shutdown (what SIGTERM and SIGINT do)."""
        if not self._stop.is_set():
            log.info("stop requested")
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped (or, with `once`, one round); the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        try:
            return await self._run()
        except Stopped:
            log.info("stopped")
            return 0
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _run(self) -> int:
        await asyncio.to_thread(self.state.prepare)
        credentials = await asyncio.to_thread(self.state.credentials)
        if credentials is None or credentials.validity.expired(_now()):
            credentials = await self._enroll("no valid certificate in the state directory")
        rounds = ONCE_ROUNDS if self.config.once else None
        session = Session.open(credentials, rounds=rounds, user_agent=self.config.user_agent)
        log.info(
            "agent running",
            extra={
                "node_id": credentials.seed.node_id,
                "urls": list(credentials.seed.urls),
                "not_after": credentials.validity.not_after,
                "version": self.config.agent_version,
            },
        )
        worker = Worker(
            session,
            self._executors,
            self.control,
            self._stop,
            power=self.config.power,
            lease_wait_s=self.config.lease_wait_s,
            grace_s=self.config.shutdown_grace_s,
            state_dir=self.config.state_dir,
        )
        async with session.client:
            if self.config.once:
                await self._heartbeat(session, worker)
                await worker.run(once=True)
                return 0
            loops = [
                asyncio.create_task(self._heartbeat_loop(session, worker)),
                asyncio.create_task(self._renewal_loop(session)),
            ]
            try:
                await worker.run()
                await self._stop.wait()  # draining: heartbeats go on until stopped
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
        log.info("stopped")
        return 0

    async def _enroll(self, reason: str) -> Credentials:
        attempts = 1 if self.config.once else None
        self._enroller.forget_renewal()
        enrolled = await until_stopped(self._stop, self._enroller.enroll(reason, attempts=attempts))
        self._heartbeat_s = enrolled.heartbeat_interval_s
        return enrolled.credentials

    def _status(self, worker: Worker) -> dict[str, Any]:
        return {
            "draining": self.control.draining,
            "task_id": worker.current,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "modules": active_modules(self.config.state_dir),
        }

    async def _heartbeat(self, session: Session, worker: Worker) -> None:
        reply = await session.client.heartbeat(self.config.agent_version, self._status(worker))
        self._heartbeat_s = reply.interval_s

    async def _heartbeat_loop(self, session: Session, worker: Worker) -> None:
        while True:
            try:
                await self._heartbeat(session, worker)
            except CertificateRejected as exc:
                session.reject(exc)
                await session.wait_changed()
                continue
            except AgentError as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})
            except Exception:
                log.exception("heartbeat loop error")
            # Never later than the interval: the server counts from it (plus its grace).
            await asyncio.sleep(max(1.0, self._heartbeat_s * self._rng.uniform(0.9, 1.0)))

    async def _renewal_loop(self, session: Session) -> None:
        backoff = Backoff()
        renew_at = session.credentials.validity.renew_at(self._rng)
        while True:
            validity = session.credentials.validity
            if session.rejected.is_set() or validity.expired(_now()):
                why = "certificate refused" if session.rejected.is_set() else "certificate expired"
                await self._reenroll(session, why)
                renew_at = session.credentials.validity.renew_at(self._rng)
                continue
            wait_s = min((renew_at - _now()).total_seconds(), MAX_SLEEP_S)
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):  # not wait_for: it can swallow cancels
                        await session.rejected.wait()
                continue
            try:
                renewed = await self._enroller.renew(session.client, session.credentials)
            except CertificateRejected as exc:
                session.reject(exc)
                continue
            except Exception as exc:
                delay = backoff.next_delay()
                log.warning(
                    "certificate renewal failed; will retry",
                    exc_info=not isinstance(exc, AgentError | OSError),
                    extra={
                        "error": str(exc),
                        "retry_in_s": round(delay, 2),
                        "not_after": validity.not_after,
                    },
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            await session.install(renewed)
            renew_at = renewed.validity.renew_at(self._rng)

    async def _reenroll(self, session: Session, reason: str) -> None:
        try:
            credentials = await self._enroll(reason)
        except Stopped:
            await asyncio.Event().wait()  # the run is ending; wait to be cancelled
            return
        except StateError:
            log.exception("cannot store new credentials; stopping")
            self.request_stop()
            return
        await session.install(credentials)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
