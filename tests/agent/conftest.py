"""Fixtures for agent tests: a test PKI, a fake node API over HTTPS, seed files."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.ca import TestPki
from tests.agent.fake_api import FakeNodeApi, serve

TOKEN = "abcdef.0123456789abcdef"
FRESH_TOKEN = "ghijkl.0123456789abcdef"


@pytest.fixture(scope="session")
def test_pki() -> TestPki:
    return TestPki()


@pytest.fixture
def node_api(test_pki: TestPki, tmp_path: Path) -> Iterator[FakeNodeApi]:
    with serve(test_pki, tmp_path, tokens={TOKEN, FRESH_TOKEN}) as api:
        yield api


@pytest.fixture
def write_seed(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a seed document to a file and return its path."""

    def write(doc: dict[str, Any]) -> Path:
        path = tmp_path / "seed.json"
        path.write_text(json.dumps(doc))
        return path

    return write
