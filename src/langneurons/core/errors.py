"""The one exception type the library raises for bad input: its message is one line that names the fix."""


class LangNeuronsError(ValueError):
    """Bad input or an unusable artifact; the message says what is wrong and what to do."""
