"""Run an evaluation task; `langneurons evaluate TASK --help` explains its options."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate` (each task has its own)."""
    p.add_argument("--list", action="store_true", help="list the tasks")


def main(args: argparse.Namespace) -> None:
    """List the tasks (`langneurons evaluate` without a task)."""
    from langneurons.cli.commands import TASKS

    print("\n".join(f"{task.name:12s} {task.summary}" for task in TASKS))
