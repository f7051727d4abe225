"""Sum statistics (or relevance) files of the same model: shared languages add up."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError

if TYPE_CHECKING:
    from langneurons.stats.sums import LanguageSums


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons merge`."""
    p.add_argument("inputs", nargs="+", help="statistics files")
    p.add_argument("-o", "--output", required=True, help="merged statistics file")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons merge`."""
    from langneurons.core.artifacts import read_meta
    from langneurons.core.errors import warn
    from langneurons.stats.activation import ActivationStats
    from langneurons.stats.relevance import RelevanceStats

    if len(args.inputs) < 2:
        raise LangNeuronsError("merge needs at least two statistics files")
    relevance = read_meta(args.inputs[0]).get("kind") == "relevance"
    kind: type[LanguageSums] = RelevanceStats if relevance else ActivationStats
    check_output(args.output, args.inputs, kind="relevance" if relevance else "stats")
    seen: dict[Path, str] = {}
    for path in args.inputs:
        if Path(path).resolve() in seen:
            warn(f"{path} is merged with itself ({seen[Path(path).resolve()]}): its text counts twice; "
                 "give each file once")
        seen[Path(path).resolve()] = str(path)
    merged = kind.load(args.inputs[0])
    for path in args.inputs[1:]:
        merged = merged + kind.load(path)
    merged.meta["merged_from"] = [str(p) for p in args.inputs]
    merged.save(args.output)
    print(options.format_table(merged.summary()))
    print(f"merged {len(args.inputs)} files; wrote {args.output}")
