"""Gather the statistics, neuron sets, calibrations, evaluation results and figures under RUN_DIR into one HTML file
with embedded figures (no network needed) and a Markdown summary beside it. Unreadable files are listed as
skipped."""

from __future__ import annotations

import argparse

from langneurons.core.checks import check_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons report`."""
    p.add_argument("run_dir", help="folder a run wrote its files to (searched recursively)")
    p.add_argument("-o", "--output", help="HTML file (default RUN_DIR/report.html; the .md goes beside it)")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons report`."""
    from langneurons.report.report import build_report

    if args.output:
        check_output(args.output, option="--output")
    report = build_report(args.run_dir, args.output)
    print(f"{len(report.used)} files shown in {', '.join(report.sections)}; {report.figures} figures, "
          f"{report.tables} tables")
    for rel, why in sorted(report.skipped.items()):
        print(f"skipped {rel}: {why}")
    print(f"report: {report.html} ({report.html.stat().st_size / 1e6:.1f} MB)\nmarkdown: {report.markdown}")
