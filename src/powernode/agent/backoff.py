"""Exponential backoff with full jitter: delay n is uniform in [0, min(cap, base * 2**n)].

Full jitter (rather than equal or no jitter) spreads a fleet's reconnects after a control-plane
restart so that they do not arrive in synchronized waves.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

BASE_S = 0.5
CAP_S = 30.0


@dataclass
class Backoff:
    """Delays for successive failed attempts; `reset()` after a success."""

    base_s: float = BASE_S
    cap_s: float = CAP_S
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # min() before the power would overflow float for a long outage; cap the exponent.
        return min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        """The next delay in seconds, and count the attempt."""
        delay = self.rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """Start over from `base_s` (after a success)."""
        self.attempt = 0
