"""Start-up cost of the command line: CPU time of `langneurons --help` and friends, each in a fresh process
(`python -m langneurons ...`).

Prints, per command, the median over repeats of the child's user + system CPU time (resource.getrusage of the
children) and its wall time, and whether torch or transformers were imported (`python -X importtime`).
Target: under 0.5 s of CPU for `langneurons --help`, and neither library imported.

Run: python perf/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = [["--help"], ["collect", "--help"], ["identify", "--help"], ["generate", "--help"],
            ["evaluate", "--help"], ["collect", "--window", "0"]]


def heavy_imports(argv: list[str]) -> str:
    """Which of torch and transformers `python -m langneurons ARGV` imports (from `-X importtime`)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "langneurons", *argv], capture_output=True,
                          text=True)
    found = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return ",".join(m for m in ("torch", "transformers") if m in found) or "-"


def measure(argv: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one fresh `python -m langneurons ARGV`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "langneurons", *argv], capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args()
    rows = []
    for argv in COMMANDS:
        runs = [measure(argv) for _ in range(args.repeats)]
        rows.append({"command": "langneurons " + " ".join(argv),
                     "cpu_s": round(statistics.median(r[0] for r in runs), 3),
                     "wall_s": round(statistics.median(r[1] for r in runs), 3), "imported": heavy_imports(argv)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':{width}s}  cpu_s  wall_s  heavy imports")
    for r in rows:
        print(f"{r['command']:{width}s}  {r['cpu_s']:5.2f}  {r['wall_s']:6.2f}  {r['imported']}")


if __name__ == "__main__":
    main()
