"""`powernode-agent`: the node agent's command line (argparse; no server-side dependencies).

    powernode-agent --state-dir DIR [--seed FILE] [--sysfs-root PATH] [--once]

Exit codes, mapped from error categories here and nowhere else: 0 done or stopped by a signal,
2 bad usage, 65 invalid input (seed, payload, state directory), 69 control plane unavailable,
77 refused (token or certificate), 70 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from powernode import __version__
from powernode.agent import log as agent_log
from powernode.agent.config import LEASE_WAIT_S, SHUTDOWN_GRACE_S, AgentConfig
from powernode.agent.errors import AgentError
from powernode.agent.executors import PowerSettings
from powernode.errors import Category

log = logging.getLogger("powernode.agent")

EXIT_CODES = {
    Category.INVALID: 65,
    Category.NOT_FOUND: 65,
    Category.CONFLICT: 65,
    Category.INVALID_TRANSITION: 65,
    Category.UNAVAILABLE: 69,
    Category.UNAUTHORIZED: 77,
    Category.FORBIDDEN: 77,
}
EXIT_SOFTWARE = 70


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="powernode-agent",
        description="The powernode node agent: enrolls, heartbeats, leases and runs tasks.",
    )
    p.add_argument("--version", action="version", version=f"powernode-agent {__version__}")
    p.add_argument("--state-dir", type=Path, required=True, help="key, certificates, seed")
    p.add_argument("--seed", type=Path, help="seed file (else fw_cfg or cloud metadata)")
    p.add_argument("--sysfs-root", type=Path, default=Path("/sys"), help=argparse.SUPPRESS)
    p.add_argument(
        "--once",
        action="store_true",
        help="enroll if needed, heartbeat, run at most one task, exit",
    )
    p.add_argument("--lease-wait", type=int, default=LEASE_WAIT_S, help="long-poll seconds")
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=SHUTDOWN_GRACE_S,
        help="seconds a running task may finish after SIGTERM",
    )
    p.add_argument("--reboot-command", default="systemctl reboot", help="run by reboot tasks")
    p.add_argument("--shutdown-command", default="systemctl poweroff", help="run by shutdown tasks")
    p.add_argument("--debug", action="store_true", help="log at debug level")
    return p


def config_from(args: argparse.Namespace) -> AgentConfig:
    """The validated settings an argument namespace names."""
    return AgentConfig(
        state_dir=args.state_dir,
        seed_file=args.seed,
        sysfs_root=args.sysfs_root,
        once=args.once,
        lease_wait_s=args.lease_wait,
        shutdown_grace_s=args.shutdown_grace,
        power=PowerSettings(
            reboot=tuple(shlex.split(args.reboot_command)),
            shutdown=tuple(shlex.split(args.shutdown_command)),
        ),
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Console entry point: parse, run the agent, return its exit code."""
    p = parser()
    args = p.parse_args(argv)
    try:
        config = config_from(args)
    except ValueError as exc:
        p.error(str(exc))
    agent_log.setup(logging.DEBUG if args.debug else logging.INFO)

    from powernode.agent.runner import Agent  # after logging, so import problems are logged

    try:
        return asyncio.run(Agent(config).run())
    except AgentError as exc:
        log.error("agent failed", extra={"error": str(exc), "category": str(exc.category)})
        return EXIT_CODES.get(exc.category, EXIT_SOFTWARE)
    except KeyboardInterrupt:
        return 0
    except Exception:
        log.exception("agent crashed")
        return EXIT_SOFTWARE


def main() -> None:
    """`python -m powernode.agent.main`."""
    sys.exit(run())


if __name__ == "__main__":
    main()
