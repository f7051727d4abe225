"""Fluency guards: distinct bigrams and repeated line patterns."""

from __future__ import annotations

import pytest

from langneurons.tasks.fluency import distinct_bigram_share, is_fluent, repeated_lines


@pytest.mark.parametrize(("text", "repeated"), [
    ("Pancakes\nB: Pancakes\nC: Pancakes", True),
    ("Paris.\nParis.", True),
    ("- tea\n- tea\n- coffee", True),
    ("1) Pizza\n2) Pizza\n3) Pizza\n4) Sushi", True),
    ("答：烤鱼\n问：烤鱼", True),
    ("1. Apples\n2. Bananas\n3. Pears", False),
    ("A: yes\nB: no", False),
    ("Ich mag Pizza.\nUnd du?", False),
    ("Pancakes", False),
    ("", False),
])
def test_repeated_lines(text: str, repeated: bool) -> None:
    assert repeated_lines(text) is repeated


def test_repeated_lines_pass_the_bigram_guard() -> None:
    """What the line guard is for: the changing labels keep the bigram share high."""
    text = "Pancakes with syrup\nB: Pancakes with syrup\nC: Pancakes with syrup"
    tokens = text.replace("\n", " \n ").split(" ")
    distinct = distinct_bigram_share(tokens)
    assert distinct >= 0.5
    assert not is_fluent(text, distinct)
    assert is_fluent("Pancakes with syrup", 1.0)
