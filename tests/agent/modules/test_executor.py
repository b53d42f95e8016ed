"""The `apply_modules` executor: payload in, result or failed outcome out, through `execute()`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powernode.agent import executors
from powernode.agent.executors import AgentControl, Outcome, TaskContext, execute
from powernode.artifacts.signing import KeySigner
from powernode.modules.store import ContentStore
from tests.agent.factories import make_context
from tests.agent.modules.factories import module_doc, policy_for, publish, state_snapshot

SERVER_STACK = (
    *("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic"),
    *("pydantic", "pydantic_settings", "typer", "rich", "click"),
)


@dataclass
class StatefulContext(TaskContext):
    """A TaskContext carrying the agent's state directory, as the agent is to pass it."""

    state_dir: Path = Path("/nonexistent")


def context(state: Path) -> StatefulContext:
    return StatefulContext(
        task_id="00000000-0000-0000-0000-00000000000a",
        kind="apply_modules",
        attempt=1,
        control=AgentControl(),
        state_dir=state,
    )


async def run(state: Path, payload: dict[str, Any]) -> Outcome:
    return await execute(executors.load(), "apply_modules", payload, context(state))


async def test_the_executor_activates_the_modules_and_reports_them(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """Result: active modules by digest, the generation, no rollback, verity and mode."""
    web = publish(store, tmp_path / "web-oci", publisher, name="web")

    outcome = await run(state, {"modules": [module_doc(web, policy_for(publisher))]})

    assert outcome.outcome == "succeeded"
    assert outcome.result["active"] == {"web": web.digest}
    assert outcome.result["generation"] == 1
    assert outcome.result["rolled_back"] is False
    assert outcome.result["verity"] in ("enabled", "unsupported")
    assert outcome.result["mode"] in ("overlay", "materialized")
    assert outcome.result["root"] == str(state / "modules" / "current" / "root")


async def test_a_refused_module_fails_the_task_and_reports_what_stays_active(
    state: Path, store: ContentStore, publisher: KeySigner, stranger: KeySigner, tmp_path: Path
) -> None:
    """The failure names the module, the stage and every reason; generation 1 stays."""
    policy = policy_for(publisher)
    base = module_doc(publish(store, tmp_path / "base-oci", publisher, name="base"), policy)
    await run(state, {"modules": [base]})
    before = state_snapshot(state)
    web = module_doc(publish(store, tmp_path / "web-oci", stranger, name="web"), policy)

    outcome = await run(state, {"modules": [base, web]})

    assert outcome.outcome == "failed"
    result = outcome.result
    assert result["error"].startswith("module web: not signed by a trusted signer")
    assert (result["module"], result["stage"]) == ("web", "verify")
    assert len(result["reasons"]) == 2  # the referrer and the .sig tag, each an unknown signer
    assert result["active"] == {"base": base["digest"]}
    assert (result["generation"], result["rolled_back"]) == (1, False)
    assert state_snapshot(state) == before


async def test_a_failed_post_check_reports_the_rollback(
    state: Path, store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """rolled_back is true and the previous generation is what is active."""
    policy = policy_for(publisher)
    first = module_doc(publish(store, tmp_path / "v1", publisher, name="web"), policy)
    await run(state, {"modules": [first]})
    second = module_doc(publish(store, tmp_path / "v2", publisher, name="web", version="2"), policy)

    outcome = await run(state, {"modules": [second], "post_check": ["false"]})

    assert outcome.outcome == "failed"
    assert outcome.result["stage"] == "post-check"
    assert outcome.result["rolled_back"] is True
    assert outcome.result["active"] == {"web": first["digest"]}
    assert outcome.result["generation"] == 1


async def test_a_payload_without_a_digest_is_refused(state: Path) -> None:
    """Payload errors name the field."""
    doc = {"name": "web", "version": "1", "reference": "oci:/x:1", "policy": {}}

    outcome = await run(state, {"modules": [doc]})

    assert outcome == Outcome(
        "failed",
        {"error": "invalid apply_modules payload: modules[0].digest must be a non-empty string"},
    )


async def test_an_agent_that_does_not_pass_its_state_directory_cannot_apply(
    store: ContentStore, publisher: KeySigner, tmp_path: Path
) -> None:
    """Until TaskContext carries `state_dir`, the kind fails with a clear reason."""
    web = publish(store, tmp_path / "web-oci", publisher, name="web")
    payload = {"modules": [module_doc(web, policy_for(publisher))]}

    outcome = await execute(
        executors.load(), "apply_modules", payload, make_context(kind="apply_modules")
    )

    assert outcome == Outcome(
        "failed", {"error": "this agent does not pass its state directory to executors"}
    )


def test_the_executor_and_the_modules_package_load_no_server_stack() -> None:
    """Importing every stage (and registering the executor) loads no server library."""
    code = (
        "import sys, json\n"
        "import powernode.agent.executors as e\n"
        "kinds = e.load()\n"
        "idle = sorted(m for m in ('cryptography', 'zstandard') if m in sys.modules)\n"
        "import powernode.agent.modules.apply, powernode.agent.modules.request\n"
        "print(json.dumps([sorted(kinds), idle, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    kinds, idle, loaded = json.loads(out.stdout)
    assert "apply_modules" in kinds
    assert idle == []  # an idle agent does not carry the verification libraries
    assert sorted(set(loaded) & set(SERVER_STACK)) == []
