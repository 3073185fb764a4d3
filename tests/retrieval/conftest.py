"""Fixtures of the retrieval tests."""

from __future__ import annotations

import pytest

from tests.retrieval.clusters import clustered


@pytest.fixture(scope="module")
def data():
    return clustered()
