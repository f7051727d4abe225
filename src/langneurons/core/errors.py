"""The exception type the library raises for bad input, and the warning it gives for doubtful input: each message
is one line that names the problem and what to do."""

import warnings


class LangNeuronsError(ValueError):
    """Bad input or an unusable artifact; the message says what is wrong and what to do."""


class LangNeuronsWarning(UserWarning):
    """Doubtful input that still gives a result (little text, a budget not reached, a file merged with itself)."""


def warn(message: str) -> None:
    """Warn the caller (the CLI prints it as one line `langneurons: warning: ...`)."""
    warnings.warn(message, LangNeuronsWarning, stacklevel=3)
