"""Fixtures for identity discovery tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from powernode.agent.identity.testing import FakeServer


@pytest.fixture
def recorder() -> Iterator[FakeServer]:
    """A server that records requests and answers 404."""
    with FakeServer() as server:
        yield server
