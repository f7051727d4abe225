"""Steering: one description of an edit, the hooks that apply it, calibrated settings and generation."""
