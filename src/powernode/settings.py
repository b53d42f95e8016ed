"""Typed, validated, immutable configuration.

Every setting is declared once here, read from `POWERNODE_*` environment variables or passed as
overrides by the CLI flags. A `Settings` object is passed explicitly; there is no global.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
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
