"""Instance kinds and task kinds, each a pydantic model registered by declaration.

Adding a kind is adding a model here (or in any imported module) with its decorator; the API
validates `spec` / `payload` against the registered model and stores the normalized JSON.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from powernode.errors import Invalid
from powernode.registry import Registry

INSTANCE_KINDS: Registry[type[BaseModel]] = Registry("instance kind")
TASK_KINDS: Registry[type[BaseModel]] = Registry("task kind")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


@INSTANCE_KINDS.register("vm")
class VmSpec(_Spec):
    """A virtual machine running on the node."""

    vcpus: int = Field(default=1, ge=1, le=256)
    memory_mib: int = Field(default=512, ge=64, le=4 * 1024 * 1024)
    disk_gib: int = Field(default=10, ge=1, le=65536)
    image: str | None = Field(default=None, max_length=500)


@INSTANCE_KINDS.register("container")
class ContainerSpec(_Spec):
    """An OCI container run by the node's container runtime."""

    image: str = Field(min_length=1, max_length=500)
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[int] = Field(default_factory=list)


@INSTANCE_KINDS.register("docker")
class DockerSpec(_Spec):
    """A managed Docker engine; `daemon_json` overrides the base module's daemon.json."""

    daemon_json: dict[str, Any] = Field(default_factory=dict)
    tls: bool = True


@INSTANCE_KINDS.register("k3s")
class K3sSpec(_Spec):
    """A K3s server or agent joining `cluster`."""

    role: Literal["server", "agent"]
    cluster: str = Field(min_length=1, max_length=63)
    version: str | None = Field(default=None, max_length=64)


@TASK_KINDS.register("shell")
class ShellPayload(_Spec):
    """Run a command (argv, no shell) on the target."""

    argv: list[str] = Field(min_length=1)
    timeout_s: int = Field(default=300, ge=1, le=86400)
    env: dict[str, str] = Field(default_factory=dict)


class ModuleRef(_Spec):
    name: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=64)


@TASK_KINDS.register("apply_modules")
class ApplyModulesPayload(_Spec):
    """Pull, verify and activate these module versions."""

    modules: list[ModuleRef] = Field(min_length=1)


@TASK_KINDS.register("reboot")
class RebootPayload(_Spec):
    """Reboot the target after `delay_s` seconds."""

    delay_s: int = Field(default=0, ge=0, le=3600)


@TASK_KINDS.register("noop")
class NoopPayload(_Spec):
    """Do nothing but report back; for checks and tests."""

    message: str = Field(default="", max_length=1000)


def validate_document(
    registry: Registry[type[BaseModel]], kind: str, doc: dict[str, Any], *, field: str
) -> dict[str, Any]:
    """`doc` validated against `kind`'s model and normalized to JSON, or Invalid naming it."""
    model = registry.get(kind)
    try:
        return model.model_validate(doc).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(
            f"{field}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            if err["loc"]
            else f"{field}: {err['msg']}"
            for err in exc.errors()
        )
        raise Invalid(f"{registry.what} {kind!r}: {problems}", field=field) from exc
