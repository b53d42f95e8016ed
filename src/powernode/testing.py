"""Test support shipped with the package: a real control plane in a subprocess.

`running_server` runs `powernode init` then `powernode serve` on a free port and yields once
`/readyz` answers; the CLI and schemathesis tests and the benchmarks use it, and so can
anyone testing an integration against powernode."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

POWERNODE = str(Path(sys.executable).parent / "powernode")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class RunningServer:
    url: str
    node_url: str
    """The mTLS node API (`https://127.0.0.1:<port>`)."""
    data_dir: Path
    token: str
    env: dict[str, str]
    """Environment for CLI subprocesses pointed at this server."""


@contextmanager
def running_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    log_level: str = "warning",
    token: str | None = None,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
    node_port: int | None = None,
) -> Iterator[RunningServer]:
    """Init and serve; yields once /readyz answers 200; stops the server afterwards.

    A second server on the same database gets an admin token of its own from `init` (its data
    dir has no credentials file yet); pass the first server's `token` to keep using that one."""
    port = port or free_port()
    node_port = node_port or free_port()
    env = {**os.environ, **(env or {}), "POWERNODE_DATA_DIR": str(data_dir)}
    env.pop("POWERNODE_TOKEN", None)
    env.pop("POWERNODE_DATABASE_URL", None)
    if database_url:
        env["POWERNODE_DATABASE_URL"] = database_url
    url = f"http://127.0.0.1:{port}"
    subprocess.run(
        [POWERNODE, "init"], env={**env, "POWERNODE_URL": url}, check=True, capture_output=True
    )
    log = (data_dir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            POWERNODE,
            "serve",
            "--port",
            str(port),
            "--node-port",
            str(node_port),
            "--log-level",
            log_level,
            *extra_args,
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(data_dir / 'serve.log').read_text()}")
            time.sleep(0.1)
        if token is None:
            token = json.loads((data_dir / "cli-credentials.json").read_text())["token"]
        yield RunningServer(
            url=url,
            node_url=f"https://127.0.0.1:{node_port}",
            data_dir=data_dir,
            token=token,
            env={**env, "POWERNODE_URL": url},
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def machine_info() -> dict[str, Any]:
    """What a benchmark result needs to say about the machine it ran on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # Benchmarks share the machine with whatever else runs: a busy one shows up here.
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
