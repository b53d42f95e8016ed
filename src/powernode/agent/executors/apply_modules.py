"""Pull, verify and activate module versions as a new generation of the node's module root.

Payload: see `powernode.agent.modules.request` ({"modules": [{name, version, reference, digest,
policy, roots, files}], "insecure", "post_check", "post_check_timeout_s"}). The work is
`powernode.agent.modules.apply.apply_modules` over `<state>/modules/`; the active root is
`<state>/modules/current/root`.

Result {"active": {name: manifest digest}, "generation": n, "rolled_back": false, "verity":
"enabled" | "unsupported", "mode": "overlay" | "materialized", "lowers": "erofs" |
"directories" | null (the overlay's lower layers; null for a materialized root), "root":
path}. On failure the task
fails with the same fields describing what is active now (unchanged, or the previous generation
again with "rolled_back": true after a failed post-check) plus "module" (or null), "stage"
(pull, verify, activate, post-check, lock) and "reasons".
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from powernode.agent.errors import TaskFailed
from powernode.agent.executors import ExecutorMeta, TaskContext

meta = ExecutorMeta(kind="apply_modules")


def _state_dir(context: TaskContext) -> Path:
    if context.state_dir is None:
        raise TaskFailed("this agent does not pass its state directory to executors")
    return context.state_dir


async def handle(payload: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Apply the modules; result as in the module docstring."""
    # Imported on use: cryptography and zstandard stay out of an idle agent's memory.
    from powernode.agent.modules.apply import ApplyOptions, active_state, apply_modules
    from powernode.agent.modules.errors import ModuleApplyError, PostCheckFailed
    from powernode.agent.modules.pull import node_tls
    from powernode.agent.modules.request import parse_request

    request = parse_request(payload)
    state_dir = _state_dir(context)
    try:
        options = ApplyOptions(node=await asyncio.to_thread(node_tls, state_dir))
        result = await apply_modules(state_dir, request, options)
    except (ModuleApplyError, OSError) as exc:
        failed = exc if isinstance(exc, ModuleApplyError) else None
        now = active_state(state_dir, rolled_back=isinstance(exc, PostCheckFailed))
        raise TaskFailed(
            str(exc),
            {
                **now.document(),
                "module": failed.module if failed else None,
                "stage": failed.stage if failed else "apply",
                "reasons": failed.reasons if failed else [str(exc)],
            },
        ) from exc
    return result.document()
