"""Getting and keeping node credentials: enrollment with a bootstrap token, and renewal.

A bootstrap token is single-use. The agent counts a token as spent once the server has accepted
it (seed.json holds it from then on) or refused it (remembered for the process's life), and never
sends a spent token again: `enroll()` re-runs discovery until a seed with a fresh token turns up,
saying so in the log once per distinct problem.

Renewal keeps one key and CSR per renewal cycle (staged as key.pem.next, see `state`), so that a
retry after a failed attempt does not generate another key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from powernode.agent import tls
from powernode.agent.backoff import Backoff
from powernode.agent.client import NodeClient
from powernode.agent.errors import AgentError, SeedError, StateError, TokenRejected
from powernode.agent.identity import DiscoveryConfig
from powernode.agent.pki import KeyAndCsr
from powernode.agent.seed import Discover, Seed, find_seed
from powernode.agent.state import Credentials, StateDir

log = logging.getLogger(__name__)

KeyMaker = Callable[[str], Awaitable[KeyAndCsr]]

ENROLL_ROUNDS = 3
"""Failover rounds of one enrollment attempt before discovery runs again."""
RENEW_ROUNDS = 3
"""Failover rounds of one renewal attempt before the renewal loop reconsiders (expiry...)."""
RETRY_CAP_S = 60.0


@dataclass(frozen=True)
class Enrolled:
    """Fresh credentials and the heartbeat interval the server handed out with them."""

    credentials: Credentials
    heartbeat_interval_s: float


class Enroller:
    """Enrolls and renews for one state directory."""

    def __init__(
        self,
        state: StateDir,
        discovery: DiscoveryConfig,
        discover: Discover,
        keymaker: KeyMaker,
        *,
        user_agent: str = "powernode-agent",
        backoff: Callable[[], Backoff] = lambda: Backoff(cap_s=RETRY_CAP_S),
    ) -> None:
        self._state = state
        self._discovery = discovery
        self._discover = discover
        self._keymaker = keymaker
        self._user_agent = user_agent
        self._backoff = backoff
        self._rejected: set[str] = set()
        self._pending: KeyAndCsr | None = None

    async def enroll(self, reason: str, *, attempts: int | None = None) -> Enrolled:
        """Enroll, retrying (with backoff) until it works; after `attempts` failures re-raise."""
        backoff = self._backoff()
        failures = 0
        last = ""
        log.info("enrolling", extra={"reason": reason})
        while True:
            try:
                return await self._enroll_once()
            except StateError:
                raise
            except AgentError as exc:
                failures += 1
                if attempts is not None and failures >= attempts:
                    raise
                delay = backoff.next_delay()
                if str(exc) != last:
                    last = str(exc)
                    log.error(
                        "cannot enroll; will retry",
                        extra={"reason": reason, "error": last, "retry_in_s": round(delay, 2)},
                    )
                await asyncio.sleep(delay)

    async def _enroll_once(self) -> Enrolled:
        seed, identity = await asyncio.to_thread(find_seed, self._discover, self._discovery)
        self._check_fresh(seed)
        made = await self._keymaker(seed.node_id)
        client = NodeClient(
            seed.urls,
            tls.server_context(seed.ca_pem),
            rounds=ENROLL_ROUNDS,
            user_agent=self._user_agent,
        )
        async with client:
            try:
                answer = await client.enroll(seed.token, made.csr_pem, identity, seed.node_id)
            except TokenRejected:
                self._rejected.add(seed.token)
                raise
        if answer.node_id != seed.node_id:
            log.warning(
                "the server enrolled another node id than the seed names",
                extra={"seed_node_id": seed.node_id, "node_id": answer.node_id},
            )
        credentials = await asyncio.to_thread(
            self._state.save_enrollment,
            seed,
            identity,
            made.key_pem,
            answer.certificate,
            answer.chain,
            answer.ca,
        )
        log.info(
            "enrolled",
            extra={"node_id": answer.node_id, "not_after": credentials.validity.not_after},
        )
        return Enrolled(credentials, answer.heartbeat_interval_s)

    def _check_fresh(self, seed: Seed) -> None:
        spent = self._state.saved_seed()
        if seed.token in self._rejected or (spent is not None and spent.token == seed.token):
            raise SeedError(
                "the seed's bootstrap token is already spent; give the agent a seed with a fresh "
                f"token (`powernode node token {seed.node_id}`)"
            )

    async def renew(self, client: NodeClient, current: Credentials) -> Credentials:
        """A new key and certificate from the server (authenticated by `current`), stored."""
        if self._pending is None:
            made = await self._keymaker(current.seed.node_id)
            await asyncio.to_thread(self._state.stage_key, made.key_pem)
            self._pending = made
        issued = await client.renew(self._pending.csr_pem, rounds=RENEW_ROUNDS)
        renewed = await asyncio.to_thread(
            self._state.commit_renewal, issued.certificate, issued.chain, issued.ca
        )
        self._pending = None
        log.info("certificate renewed", extra={"not_after": renewed.validity.not_after})
        return renewed

    def forget_renewal(self) -> None:
        """Drop a staged renewal key (before re-enrolling, which makes its own key)."""
        self._pending = None
        self._state.discard_staged_key()
