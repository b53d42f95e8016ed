"""Every 422 has one shape, `errors: [{field, message}]`, whichever layer refused the request."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from powernode.api import problems
from powernode.errors import Invalid
from tests.api.conftest import Api


@pytest.mark.parametrize(
    ("selector", "wrong"),
    [("-bad", "term"), ("env=-x", "value"), ("env in ()", "set"), ("a b c", "term")],
)
async def test_a_bad_label_selector_is_refused_naming_the_selector(
    api: Api, selector: str, wrong: str
) -> None:
    response = await api.call("GET", "/nodes", params={"selector": selector})
    assert response.status_code == 422, wrong
    problem = response.json()
    assert problem["field"] == "selector"
    assert problem["errors"] == [{"field": "selector", "message": problem["detail"]}]


async def test_a_domain_refusal_lists_its_field_like_request_validation_does(api: Api) -> None:
    domain = await api.call("POST", "/nodes", json={"name": "n", "labels": {"-bad": "x"}})
    assert domain.status_code == 422
    assert domain.json()["field"] == "labels"  # kept for older clients
    assert domain.json()["errors"] == [{"field": "labels", "message": domain.json()["detail"]}]

    cursor = await api.call("GET", "/nodes", params={"cursor": "not-a-cursor"})
    assert cursor.json()["errors"][0]["field"] == "cursor"

    validation = await api.call("POST", "/nodes", json={"labels": "x"})
    assert validation.status_code == 422
    assert {e["field"] for e in validation.json()["errors"]} == {"name", "labels"}
    assert all(set(e) == {"field", "message"} for e in validation.json()["errors"])


async def test_the_operator_api_documents_errors_on_every_problem(api: Api) -> None:
    spec = (await api.http.get("/api/v1/openapi.json")).json()
    problem = spec["components"]["schemas"]["Problem"]
    assert "errors" in problem["properties"]
    field_error = spec["components"]["schemas"]["FieldError"]
    assert set(field_error["required"]) == {"field", "message"}


@pytest.fixture
async def bare() -> AsyncIterator[httpx.AsyncClient]:
    """An app with only the problem handlers, raising what the operator API's services do."""
    app = FastAPI()
    problems.install(app)

    @app.get("/whole")
    async def whole() -> None:
        raise Invalid("the request as a whole is wrong")

    @app.get("/several")
    async def several() -> None:
        raise Invalid(
            "module.toml: two keys are wrong",
            file="module.toml",
            errors=[{"key": "name", "problem": "bad"}, {"field": "version", "message": "bad"}],
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_refusal_naming_no_field_lists_the_request_as_a_whole(
    bare: httpx.AsyncClient,
) -> None:
    problem = (await bare.get("/whole")).json()
    assert problem["errors"] == [{"field": None, "message": "the request as a whole is wrong"}]


async def test_a_refusal_listing_its_own_errors_keeps_them_each_with_field_and_message(
    bare: httpx.AsyncClient,
) -> None:
    problem = (await bare.get("/several")).json()
    assert problem["errors"] == [
        {
            "field": None,
            "message": "module.toml: two keys are wrong",
            "key": "name",
            "problem": "bad",
        },
        {"field": "version", "message": "bad"},
    ]
