"""Backoff: exponential growth, full jitter, cap, reset."""

from __future__ import annotations

import random

from powernode.agent.backoff import BASE_S, CAP_S, Backoff


def test_delays_stay_within_the_exponential_ceiling() -> None:
    """Delay n lies in [0, min(30, 0.5 * 2**n)]."""
    backoff = Backoff(rng=random.SystemRandom())
    for attempt in range(200):
        delay = backoff.next_delay()
        assert 0.0 <= delay <= min(CAP_S, BASE_S * 2**attempt)


def test_ceilings_double_then_stop_at_the_cap() -> None:
    """The ceiling goes 0.5, 1, 2, ... and never above 30 s, even after many failures."""
    backoff = Backoff()
    ceilings = []
    for _ in range(2000):
        ceilings.append(backoff.ceiling())
        backoff.next_delay()
    assert ceilings[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert max(ceilings) == CAP_S


def test_delays_are_jittered_over_the_whole_range() -> None:
    """Full jitter: capped delays spread from near 0 to near the cap."""
    backoff = Backoff(rng=random.SystemRandom(), attempt=20)
    delays = [backoff.next_delay() for _ in range(500)]
    assert min(delays) < 3.0
    assert max(delays) > 27.0


def test_reset_starts_over() -> None:
    """After reset the next delay is again at most the base."""
    backoff = Backoff(rng=random.SystemRandom(), attempt=10)
    backoff.reset()
    assert backoff.next_delay() <= BASE_S
