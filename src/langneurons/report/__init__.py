"""Report: figures and the HTML/Markdown report of a run folder."""
