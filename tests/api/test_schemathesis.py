"""Property-based conformance: schemathesis generates requests for every operation of the
OpenAPI document against a real server; no response may be a 5xx or break the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from powernode.testing import RunningServer, running_server

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("schemathesis")) as srv:
        # Objects for the generated requests to hit, so not every path is a 404.
        headers = {"Authorization": f"Bearer {srv.token}"}
        with httpx.Client(base_url=f"{srv.url}/api/v1", headers=headers) as http:
            http.post("/templates", json={"name": "seed"}).raise_for_status()
            http.post("/provider-accounts", json={"name": "seed", "kind": "qemu"})
            http.post("/nodes", json={"name": "seed"}).raise_for_status()
        yield srv


def _operations() -> list[str]:
    from powernode.api.app import create_app
    from powernode.settings import Settings

    spec = create_app(Settings(data_dir=Path("/nonexistent"))).openapi()
    return [f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item]


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation", _operations())
def test_no_operation_returns_a_server_error_or_breaks_its_schema(
    server: RunningServer, operation: str, mode: GenerationMode
) -> None:
    """Valid and invalid generated requests alike get documented, well-formed answers."""
    schema = schemathesis.openapi.from_url(f"{server.url}/api/v1/openapi.json")
    method, path = operation.split(" ", 1)
    api_operation = schema[path][method]
    headers = {"Authorization": f"Bearer {server.token}"}

    @given(case=api_operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS)

    check()
