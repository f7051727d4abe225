"""List the texts of the embedded UDHR corpus: code, BCP-47 tag, ISO 639-3 code and name."""

from __future__ import annotations

import argparse

from langneurons.cli import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons languages`."""
    p.add_argument("--search", help="only rows containing this text (e.g. 'german', 'cmn')")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons languages`."""
    from langneurons.data.udhr import udhr_languages

    rows = [{"code": e.get("code"), "bcp47": e.get("bcp47"), "iso6393": e.get("iso6393"), "name": e.get("name")}
            for e in udhr_languages()]
    if args.search:
        needle = args.search.lower()
        rows = [r for r in rows if any(needle in str(v).lower() for v in r.values())]
    print(options.format_table(rows))
    print(f"{len(rows)} UDHR texts; pass ISO 639-1/3 codes (en, deu), BCP-47 tags (zh-Hant) or these codes")
