"""Start-up cost of the command line: CPU time of `langneurons --help` and friends, each in a fresh process.

Prints, per command, the median over repeats of the child's user + system CPU time (resource.getrusage of the
children) and its wall time, and whether torch or transformers were imported (target: under 0.5 s of CPU for
`langneurons --help`, and neither library imported).

Run: python benchmarks/startup.py [--repeats 5]
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
# runs the CLI as the console script does, then reports which heavy libraries were imported
CHILD = ("import sys\nfrom langneurons.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
         "except SystemExit as e:\n    code = e.code\n"
         "print('@@' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)\n"
         "sys.exit(code)")


def measure(argv: list[str]) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, heavy modules imported) of one fresh `langneurons ARGV`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    heavy = done.stderr.rpartition("@@")[2].strip() or "-"
    return cpu, wall, heavy


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
                     "wall_s": round(statistics.median(r[1] for r in runs), 3), "imported": runs[-1][2]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':{width}s}  cpu_s  wall_s  heavy imports")
    for r in rows:
        print(f"{r['command']:{width}s}  {r['cpu_s']:5.2f}  {r['wall_s']:6.2f}  {r['imported']}")


if __name__ == "__main__":
    main()
