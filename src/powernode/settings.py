"""Typed, validated, immutable configuration.

Every setting is declared once here, read from `POWERNODE_*` environment variables or passed as
overrides by the CLI flags. A `Settings` object is passed explicitly; there is no global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "powernode"


class Settings(BaseSettings):
    """Control-plane and CLI configuration."""

    model_config = SettingsConfigDict(env_prefix="POWERNODE_", frozen=True, extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="State directory.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy/libpq URL; default SQLite at DATA_DIR/powernode.db. "
        "postgresql://user@host/db for production.",
    )
    host: str = Field(default="127.0.0.1", description="Address `serve` binds.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port `serve` binds.")
    url: str | None = Field(default=None, description="Control plane URL the CLI talks to.")
    token: str | None = Field(default=None, description="API token the CLI sends.")
    db_pool_size: int = Field(default=10, ge=1, le=200, description="PostgreSQL pool size.")
    retention_routine_days: int = Field(
        default=90, ge=1, description="Days routine fleet events are kept."
    )
    retention_critical_days: int = Field(
        default=365, ge=1, description="Days critical fleet events are kept."
    )
    retention_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Events deleted per retention transaction."
    )
    retention_interval_s: int = Field(
        default=3600, ge=0, description="Seconds between retention runs; 0 = never."
    )

    job_schedules: dict[str, str] = Field(
        default_factory=dict,
        description="Per-job schedule overrides as JSON, e.g. "
        '{"retention": "@daily", "reaper": "@every 10s"}; "off" disables a job.',
    )
    worker_in_serve: bool | None = Field(
        default=None,
        description="Run the scheduled jobs inside `serve`; default: yes on SQLite, no on "
        "PostgreSQL (run `powernode worker` there).",
    )
    provisioning_timeout_s: int = Field(
        default=900, ge=10, description="Seconds a node may stay provisioning before it fails."
    )

    node_host: str | None = Field(
        default=None, description="Address the node API binds; default: the `host` setting."
    )
    node_port: int = Field(
        default=8443, ge=1, le=65535, description="Port of the mTLS node API (`--node-port`)."
    )
    node_urls: list[str] = Field(
        default_factory=list,
        description="Node API URLs handed to agents in seeds (JSON list); default "
        "https://<node host>:<node port>.",
    )
    node_api_names: list[str] = Field(
        default_factory=list,
        description="Extra DNS names / IPs for the node API's server certificate (JSON list).",
    )
    image_suite: str = Field(
        default="bookworm", description="Debian suite boot images are built from."
    )
    image_mirrors: list[str] = Field(
        default_factory=lambda: ["http://deb.debian.org/debian"],
        description="Debian mirrors for image builds (JSON list; mmdebstrap's MIRROR arguments, "
        'full "deb ..." lines allowed).',
    )
    image_cache_dir: Path | None = Field(
        default=None,
        description="Where image builds keep their stages; default "
        "$XDG_CACHE_HOME/powernode/images (~/.cache/powernode/images).",
    )
    image_mmdebstrap_mode: str = Field(
        default="auto",
        pattern="^(auto|unshare|root|fakechroot)$",
        description="mmdebstrap mode: auto = unshare where user namespaces work, else root.",
    )
    pki_passphrase: SecretStr | None = Field(
        default=None,
        description="Encrypts the CA keys at rest. Unset: `init` generates one into "
        "DATA_DIR/pki-passphrase (0600); production passes it from a secret store.",
    )
    bootstrap_token_ttl_s: int = Field(
        default=900, ge=30, le=7 * 86400, description="Lifetime of a bootstrap token."
    )
    node_cert_lifetime_s: int = Field(
        default=86400, ge=300, le=90 * 86400, description="Lifetime of node certificates."
    )
    heartbeat_interval_s: float = Field(
        default=10.0, gt=0, le=3600, description="Heartbeat interval handed to agents (minimum)."
    )
    heartbeat_grace_beats: int = Field(
        default=4, ge=2, le=100, description="Missed intervals before a node is unreachable."
    )
    heartbeat_max_rate: float = Field(
        default=1000.0,
        gt=0,
        description="Heartbeats/s the fleet may send; the interval "
        "handed out grows with fleet size to stay under it.",
    )
    task_visibility_timeout_s: int = Field(
        default=30, ge=5, le=3600, description="Seconds a task lease lasts unless extended."
    )
    qemu_runner: Literal["real", "recorder", "disabled"] = Field(
        default="real",
        description="How the qemu provider runs VMs: real (qemu-system-*), recorder (records "
        "the command lines, for tests) or disabled (refuses with an error).",
    )
    qemu_guest_address: str = Field(
        default="10.0.2.100",
        description="Address QEMU guests reach the node API at (forwarded to this machine).",
    )
    qemu_memory_mib: int = Field(
        default=1024, ge=64, le=1024 * 1024, description="Default memory of a qemu node (MiB)."
    )
    qemu_cpus: int = Field(default=1, ge=1, le=256, description="Default vCPUs of a qemu node.")

    @property
    def runs_jobs_in_serve(self) -> bool:
        if self.worker_in_serve is not None:
            return self.worker_in_serve
        return self.effective_database_url.startswith("sqlite")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or the embedded SQLite default in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'powernode.db'}"

    @property
    def cli_credentials_path(self) -> Path:
        """Where `powernode init` leaves the local CLI's URL and token (mode 0600)."""
        return self.data_dir / "cli-credentials.json"
