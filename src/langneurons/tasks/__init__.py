"""Evaluation tasks that run a model with and without language steering and score the outputs."""
