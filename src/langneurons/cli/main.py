"""The entry point of `langneurons`: the parser built from the registry of commands, then warnings, threads,
torchrun ranks and exit codes around the chosen command."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from langneurons.cli import options
from langneurons.cli.commands import COMMANDS, Command
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError, LangNeuronsWarning


def _join_ranks() -> None:
    """Under torchrun: join the process group; ranks other than 0 print nothing (rank 0 reports and writes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return  # one process: nothing to join (and torch stays unloaded for --help and info)
    from langneurons.core.distributed import init, is_main

    init()
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def _selected(argv: Sequence[str] | None) -> Callable[[str], bool]:
    """Which commands to build in full (their modules imported): those `argv` names (all when argv is None)."""
    if argv is None:
        return lambda _name: True
    words = [a for a in argv if not a.startswith("-")]
    return lambda name: name in words[:2]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given `argv`, only the commands it names import their modules (so `--help` stays fast)."""
    parser = options.Parser(prog="langneurons",
                            description=f"The `langneurons` command: {', '.join(c.name for c in COMMANDS)}.")
    _add_commands(parser, COMMANDS, "command", _selected(argv), required=True)
    return parser


def _add_commands(parser: argparse.ArgumentParser, commands: Sequence[Command], dest: str,
                  selected: Callable[[str], bool], required: bool = False) -> None:
    """A subparser per command; where `selected(name)`, its module is imported and gives its help, options and
    function."""
    sub = parser.add_subparsers(dest=dest, required=required, metavar=dest.upper())
    for command in commands:
        p = sub.add_parser(command.name, help=command.summary)
        if not selected(command.name):
            continue
        module = import_module(command.cli)
        if command.work:  # a task's docstring, with its paragraphs and lists
            p.description, p.formatter_class = _docstring(command.work), argparse.RawDescriptionHelpFormatter
        else:
            p.description = module.__doc__
        module.add_arguments(p)
        p.set_defaults(func=module.main)
        if command.tasks:
            _add_commands(p, command.tasks, "task", selected)


def _docstring(module: str) -> str | None:
    """A module's docstring, read from its source: importing the module could import torch."""
    spec = importlib.util.find_spec(module)
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text("utf-8")))  # type: ignore[union-attr, arg-type]


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    if issubclass(category, LangNeuronsWarning):
        print(f"langneurons: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input ends with exit code 2 and one line on stderr."""
    argv = options.quote_signed(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return int(e.code or 0)
    try:
        options.check_numbers(args)
        if args.command in ("evaluate", "compare") and getattr(args, "output_dir", None):
            check_output(args.output_dir, option="--output-dir", folder=True)
        with warnings.catch_warnings():
            warnings.simplefilter("always", LangNeuronsWarning)
            warnings.showwarning = _show_warning
            _join_ranks()
            if hasattr(args, "threads"):
                options.set_threads(args.threads)
            args.func(args)
    except LangNeuronsError as e:
        print(f"langneurons: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langneurons: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
