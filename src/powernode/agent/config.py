"""The agent's settings: typed, validated once, immutable; the command line fills them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from powernode import __version__
from powernode.agent.executors import PowerSettings
from powernode.agent.identity import DiscoveryConfig

LEASE_WAIT_S = 25
"""Long-poll of tasks/lease; below common proxy idle timeouts, within the server's 0..60."""
SHUTDOWN_GRACE_S = 10.0
"""On SIGTERM, how long the current task may run on (and report) before it is abandoned."""
DEFAULT_HEARTBEAT_S = 30.0
"""Heartbeat interval until the server has named one."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything that shapes one agent run."""

    state_dir: Path
    seed_file: Path | None = None
    sysfs_root: Path = Path("/sys")
    once: bool = False
    """Enroll if needed, heartbeat once, lease at most one task, run and report it, exit."""
    lease_wait_s: int = LEASE_WAIT_S
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
    power: PowerSettings = field(default_factory=PowerSettings)
    agent_version: str = __version__

    def __post_init__(self) -> None:
        if not 0 <= self.lease_wait_s <= 60:
            raise ValueError("lease_wait_s must be from 0 to 60")
        if self.shutdown_grace_s < 0:
            raise ValueError("shutdown_grace_s must not be negative")

    @property
    def user_agent(self) -> str:
        """The User-Agent of every node API call."""
        return f"powernode-agent/{self.agent_version}"

    def discovery(self) -> DiscoveryConfig:
        """Where identity discovery looks."""
        return DiscoveryConfig(seed_file=self.seed_file, sysfs_root=self.sysfs_root)
