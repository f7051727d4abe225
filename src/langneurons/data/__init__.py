"""Data: text corpora, windows and prompts (the package data files live here too)."""
