"""Why an apply_modules run failed: one root, each subclass a stage and a category.

Every error names the module (when one is to blame), the stage and the cause; `reasons` holds
every reason when there are several (each signature that did not count, each file that did
not match). The executor turns them into a failed task with that result.
"""

from __future__ import annotations

from collections.abc import Sequence

from powernode.agent.errors import AgentError
from powernode.errors import Category


class ModuleApplyError(AgentError):
    """Root of the errors of pulling, verifying and activating modules."""

    stage = "apply"

    def __init__(self, module: str | None, cause: str, reasons: Sequence[str] = ()) -> None:
        where = f"module {module}" if module else "modules"
        super().__init__(f"{where}: {cause}", module=module, stage=self.stage)
        self.module = module
        self.cause = cause
        self.reasons: list[str] = list(reasons) or [cause]


class FetchFailed(ModuleApplyError):
    """The artifact or its signatures could not be fetched (registry down, not found, denied)."""

    category = Category.UNAVAILABLE
    title = "Module artifact not fetched"
    stage = "pull"


class Rejected(ModuleApplyError):
    """The artifact is not the one asked for, not trusted, or its layer is unsafe or damaged."""

    category = Category.FORBIDDEN
    title = "Module artifact rejected"
    stage = "verify"


class ActivationFailed(ModuleApplyError):
    """The verified trees could not be made the active root."""

    category = Category.UNAVAILABLE
    title = "Module activation failed"
    stage = "activate"


class PostCheckFailed(ModuleApplyError):
    """The post-check refused the new generation; it was rolled back."""

    category = Category.INVALID
    title = "Post-check failed"
    stage = "post-check"


class Busy(ModuleApplyError):
    """Another apply holds the modules directory."""

    category = Category.CONFLICT
    title = "Modules busy"
    stage = "lock"
