"""Figures (PNG + SVG): charts of task results and figures of neuron sets and statistics. Tasks draw their own
figures beside their results; the report embeds them."""
