"""Data: text corpora, windows, prompts and parallel text for translation (the package data files live here too)."""
