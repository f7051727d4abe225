"""Shared fixtures: tests/ on sys.path (for `tiny`), and the real embedded model for integration tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the `gemma` fixture is an integration test (deselect: -m "not integration")."""
    for item in items:
        if "gemma" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def gemma():
    """(model, tokenizer) of the embedded gemma-3-270m, loaded once per session (converted once per cache)."""
    from langneurons.core.models import load_model

    return load_model("gemma-3-270m")
