"""Steering: one description of an edit (`SteeringConfig`), the hooks that apply it (`steer`), calibrated
settings, generation, and export to other tools. `from langneurons.steering import steer` loads `edits` on first
use."""

from importlib import import_module
from typing import Any

__all__ = ["Steering", "SteeringConfig", "parse_expression", "steer"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'langneurons.steering' has no attribute {name!r}")
    home = "config" if name in ("SteeringConfig", "parse_expression") else "edits"
    return getattr(import_module(f"langneurons.steering.{home}"), name)
