"""Steering: one description of an edit (`SteeringConfig`), the hooks that apply it (`steer`), calibrated
settings, generation, and export to other tools."""

from langneurons.steering.edits import Steering, SteeringConfig, parse_expression, steer

__all__ = ["Steering", "SteeringConfig", "parse_expression", "steer"]
