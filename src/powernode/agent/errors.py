"""The agent's errors: one root (`AgentError`, a `PowernodeError`), each subclass a category.

Node API problem documents become `NodeApiError` subclasses chosen by status in one place,
`api_error()`; the runner decides what each means (re-enroll, drop a result, back off) and `main`
maps categories to exit codes in one place.
"""

from __future__ import annotations

from typing import Any

from powernode.errors import Category, PowernodeError


class AgentError(PowernodeError):
    """Root of every error the agent raises on purpose."""


class SeedError(AgentError):
    """No seed, or a seed that is not a valid version-1 seed document."""

    category = Category.INVALID
    title = "Invalid seed"


class StateError(AgentError):
    """The state directory cannot be used (wrong owner, unreadable, inconsistent)."""

    category = Category.INVALID
    title = "Unusable state directory"


class Unreachable(AgentError):
    """No control-plane URL answered (connection error or 5xx) within the allowed rounds."""

    category = Category.UNAVAILABLE
    title = "Control plane unreachable"


class ProtocolViolation(AgentError):
    """The control plane answered something docs/node-protocol.md does not allow."""

    category = Category.UNAVAILABLE
    title = "Unexpected answer from the control plane"


class NodeApiError(AgentError):
    """A 4xx problem document from the node API, with its `status`, `title` and `detail`."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}", **extra)
        self.status = status
        self.title = title
        self.problem_detail = detail


class TokenRejected(NodeApiError):
    """Enrollment refused the bootstrap token (bad, reused, expired or another node's)."""

    category = Category.UNAUTHORIZED


class CertificateRejected(NodeApiError):
    """401/403 on a certificate-authenticated call: revoked or unknown; the node must re-enroll."""

    category = Category.UNAUTHORIZED


class StaleLease(NodeApiError):
    """409: the lease epoch is no longer current; the task belongs to a newer lease."""

    category = Category.CONFLICT


class TaskGone(NodeApiError):
    """404 on a task: not (or no longer) this node's task."""

    category = Category.NOT_FOUND


class RequestRejected(NodeApiError):
    """Any other 4xx (for example 422, a CSR the server would not sign)."""

    category = Category.INVALID


def api_error(status: int, title: str, detail: str, *, enrolling: bool) -> NodeApiError:
    """The typed error for a 4xx answer; `enrolling` when the call authenticated by token."""
    cls: type[NodeApiError]
    if status in (401, 403):
        cls = TokenRejected if enrolling else CertificateRejected
    elif status == 409:
        cls = StaleLease
    elif status == 404:
        cls = TaskGone
    else:
        cls = RequestRejected
    return cls(status, title, detail)


class PayloadError(AgentError):
    """A task payload that does not match its kind's shape."""

    category = Category.INVALID
    title = "Invalid task payload"


class TaskFailed(AgentError):
    """An executor's failure: the task completes as `failed` with `result` (plus `error`)."""

    category = Category.INVALID
    title = "Task failed"

    def __init__(self, detail: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.result: dict[str, Any] = dict(result or {})
