"""Build and score the labelled sets of real model outputs in this folder (used by tests/test_judging_real.py).

    python tests/data/judging_set.py gather RUN_DIR... > candidates.jsonl   # outputs of `evaluate forcing` runs
    python tests/data/judging_set.py score                                 # confusion counts, before and after

`gather` reads every `*_samples.jsonl` under the run folders and writes each distinct output once with where it
came from and a suggested label (by the script of most letters); the labels in `judging_lid.jsonl` and
`judging_fluency.jsonl` were then checked by reading every text. `score` prints the confusion counts of the
identifier without and with the confidence floor and the script check, and of the fluency guard without and with
the line-pattern check.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from langneurons.tasks.fluency import MIN_DISTINCT_BIGRAMS, repeated_lines
from langneurons.tasks.lid import FastTextIdentifier, _script

HERE = Path(__file__).parent
SCRIPT_LANGUAGE = {"Hani": "zh", "Hang": "ko", "Arab": "ar", "Deva": "hi", "Cyrl": "ru"}


def dominant_script(text: str) -> tuple[str, float]:
    """The script of most letters (kana counted with Han) and its share of the letters."""
    counts = Counter(_script(c) for c in text if c.isalpha())
    total = sum(counts.values())
    if not total:
        return "none", 0.0
    counts["Hani"] += counts.pop("Kana", 0)
    script, n = counts.most_common(1)[0]
    return script, n / total


def suggest(text: str) -> str:
    script, _ = dominant_script(text)
    if script == "Hani":
        return "ja" if any(_script(c) == "Kana" for c in text) else "zh"
    if script == "Cyrl" and set(text) & set("іїєґІЇЄҐ"):
        return "uk"
    return SCRIPT_LANGUAGE.get(script, "?")


def gather(runs: list[str]) -> None:
    seen = set()
    for run in runs:
        for path in sorted(Path(run).rglob("*_samples.jsonl")):
            fmt = json.loads((path.parent / path.name.replace("_samples.jsonl", ".json")).read_text())[
                "settings"].get("prompt_format", "plain")
            model = Path(run).name
            for line in path.read_text("utf-8").splitlines():
                row = json.loads(line)
                text = row["output"]
                if not text.strip() or text in seen:
                    continue
                seen.add(text)
                script, share = dominant_script(text)
                print(json.dumps({"text": text, "suggested": suggest(text), "script": script,
                                  "script_share": round(share, 3), "model": model, "prompt_format": fmt,
                                  "setting": row["setting"], "source": row["source"], "target": row["target"],
                                  "distinct_bigrams": row["distinct_bigrams"]},
                                 ensure_ascii=False))


def score() -> None:
    from test_judging_real import SCRIPT_LABELS

    rows = [json.loads(line) for line in (HERE / "judging_lid.jsonl").read_text("utf-8").splitlines()]
    texts, labels = [r["text"] for r in rows], [r["label"] for r in rows]
    for name, ident in [("before (fastText + han rule)", FastTextIdentifier(script_check=False, floor=0.0)),
                        ("after (+ script check, floor)", FastTextIdentifier())]:
        found = [f.language for f in ident.identify(texts)]
        readable = [(f, lab) for f, lab in zip(found, labels) if lab != "und"]
        wrong_script = sum(f not in SCRIPT_LABELS[r["script"]] | {"und"} for f, r in zip(found, rows))
        print(f"identifier {name}: readable {sum(f == lab for f, lab in readable)}/{len(readable)} correct; "
              f"{wrong_script}/{len(rows)} labelled with a language of another script")
        confusion = Counter((lab, f) for f, lab in zip(found, labels) if f != lab)
        print("  disagreements (label -> predicted: count):", ", ".join(f"{a}->{b or '-'}: {n}" for (a, b), n in
                                                                         confusion.most_common()))
    rows = [json.loads(line) for line in (HERE / "judging_fluency.jsonl").read_text("utf-8").splitlines()]
    for name, guard in [("before (distinct bigrams)", lambda r: r["distinct_bigrams"] >= MIN_DISTINCT_BIGRAMS),
                        ("after (+ repeated lines)", lambda r: r["distinct_bigrams"] >= MIN_DISTINCT_BIGRAMS
                         and not repeated_lines(r["text"]))]:
        counts = Counter((r["repeated"], guard(r)) for r in rows)
        print(f"fluency guard {name}: repeated outputs passed {counts[(True, True)]}, caught {counts[(True, False)]}; "
              f"clean outputs passed {counts[(False, True)]}, rejected {counts[(False, False)]}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    gather(sys.argv[2:]) if sys.argv[1] == "gather" else score()
