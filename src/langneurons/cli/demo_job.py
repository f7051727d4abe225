"""The main job on the embedded default: statistics -> LAPE -> calibrated forcing grid -> perplexity -> report.

Every stage writes its files into one run folder; a rerun keeps what a finished stage wrote (statistics resume
mid-language, perplexity cells resume per cell), so an interrupted demo continues where it stopped. The seconds
of each stage in summary.json add up over the runs that made the folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from langneurons.core.errors import LangNeuronsError
from langneurons.tasks.results import DEMO_KIND, write_kind

LANGUAGES = ["en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja", "ko"]
EMBEDDED = "gemma-3-270m"
# The grid's generation: 40 new tokens (the shipped calibration chose its settings on 32), repetition penalty 1.2
# (as in the calibration).
GRID_MAX_NEW_TOKENS, GRID_REPETITION_PENALTY = 40, 1.2


def builtin_calibration(model_name: str) -> Path | None:
    """The calibration shipped for the embedded model (made by `langneurons calibrate` on the demo's statistics:
    dev questions, 32 new tokens, repetition penalty 1.2), or None for other models."""
    if model_name != EMBEDDED:
        return None
    return Path(str(resources.files("langneurons") / "data" / f"calibration-{EMBEDDED}.json"))


def run_demo(
    model_name: str = EMBEDDED,
    languages: Sequence[str] | None = None,
    output_dir: str | Path = "runs/demo",
    max_tokens: int | None = None,
    window: int = 512,
    top_rate: float = 0.01,
    calibration: str | Path | None = None,
    questions: int | None = None,
    batch_size: int = 64,
    grid: bool = True,
    perplexity: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage; returns the summary (also written to `summary.json`) with each stage's seconds."""
    from langneurons.core.models import load_model
    from langneurons.data.prompts import questions as builtin_questions
    from langneurons.data.udhr import udhr
    from langneurons.figures.charts import neurons_per_layer
    from langneurons.identify import lape
    from langneurons.report.report import build_report
    from langneurons.stats.collect import collect_stats
    from langneurons.steering.calibration import Calibration
    from langneurons.steering.generation import Decoding
    from langneurons.tasks.forcing import run_forcing
    from langneurons.tasks.perplexity import run_perplexity

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    langs = list(languages or LANGUAGES)
    cal_path = calibration or builtin_calibration(model_name)
    if grid and cal_path is None:
        raise LangNeuronsError(f"no built-in calibration for {model_name}; run `langneurons calibrate` and pass "
                               "--calibration FILE, or --no-grid")
    summary: dict[str, Any] = {"languages": langs}
    clock = _Clock(out / "summary.json", summary)
    stages = 3 + grid + perplexity
    print(f"[1/{stages}] loading {model_name} (the first run converts the embedded model once, about a minute)")
    with clock.stage("load"):
        model, tok = load_model(model_name)
    print(f"[2/{stages}] statistics over the UDHR in {len(langs)} languages -> {out / 'stats.safetensors'}")
    with clock.stage("collect+lape"):
        stats = collect_stats(model, tok, udhr(langs), max_tokens=max_tokens, window=window,
                              checkpoint=out / "stats.safetensors", progress=progress)
        neurons = lape(stats, top_rate=top_rate)
        neurons.save(out / "neurons.safetensors")
        neurons_per_layer(neurons, out / "neurons_per_layer.png")
    summary.update({"model": stats.meta["model"], "tokens": stats.meta["n_tokens"], "lape": neurons.meta["settings"],
                    "distinct_neurons": neurons.count(), "neurons": {lang: neurons.count(lang) for lang in langs}})
    print(f"  LAPE {top_rate:.0%}: {neurons.count()} distinct neurons; "
          + " ".join(f"{lang} {n}" for lang, n in summary["neurons"].items()))
    stage = 3
    if grid:
        assert cal_path is not None  # a grid without a calibration was refused above
        cal = Calibration.load(cal_path)
        targets = [t for t in langs if t in cal.settings]
        print(f"[{stage}/{stages}] calibrated forcing grid ({len(langs)} prompt x {len(targets)} target languages, "
              f"calibration {cal_path}) -> {out / 'forcing'}")
        with clock.stage("forcing"):
            forcing = _finished_grid(out / "forcing" / "forcing.json", langs, targets)
            if forcing is None:
                question_set = ({lang: builtin_questions(lang, "eval")[:questions] for lang in langs} if questions
                                else None)
                decoding = Decoding(max_new_tokens=GRID_MAX_NEW_TOKENS, batch_size=batch_size,
                                    repetition_penalty=GRID_REPETITION_PENALTY)
                result = run_forcing(model, tok, None, stats, langs, targets,
                                     {"calibrated": {t: cal.setting(t) for t in targets}}, question_set=question_set,
                                     decoding=decoding, progress=progress)
                result.save(out / "forcing")
                forcing = result.summary()["calibrated"]
        summary["forcing"] = {"fluent_success": forcing["fluent_success"], "success": forcing["success"],
                              "per_target": {t: v["fluent_success"] for t, v in forcing["per_target"].items()}}
        print("  fluent success per target: "
              + " ".join(f"{t} {v:.2f}" for t, v in summary["forcing"]["per_target"].items())
              + f"  (mean {forcing['fluent_success']:.3f})")
        stage += 1
    if perplexity:
        print(f"[{stage}/{stages}] perplexity with each language's neurons deactivated, and a random control "
              f"-> {out / 'perplexity'}")
        with clock.stage("perplexity"):
            ppl = run_perplexity(model, tok, neurons, udhr(langs), output_dir=out / "perplexity", progress=progress)
            ppl.save(out / "perplexity")
        sets = ppl.summary()["sets"]
        summary["perplexity"] = {name: {k: s[k] for k in ("diagonal_mean", "off_diagonal_mean", "ratio",
                                                           "own_hurt_most")} for name, s in sets.items()}
        for name, s in summary["perplexity"].items():
            print(f"  {name:8s} own-language ΔNLL {s['diagonal_mean']:+.3f}, others {s['off_diagonal_mean']:+.3f}, "
                  f"own hurt most for {s['own_hurt_most']}/{len(ppl.deactivated)}")
        stage += 1
    print(f"[{stage}/{stages}] report")
    with clock.stage("report"):
        report = build_report(out, out / "report.html")  # it shows the seconds of the stages before it
    runs = f" over {clock.runs} runs" if clock.runs > 1 else ""
    print(f"\ndone in {clock.seconds['total']:.0f} s{runs}. Open the report: {report.html}")
    return clock.record()


class _Clock:
    """Seconds per stage, added to those of earlier runs of the same folder (from its summary.json, when it holds
    the same languages), and written with the summary after every stage, also when a stage is interrupted."""

    def __init__(self, path: Path, summary: dict[str, Any]):
        self.path, self.summary = path, summary
        old = json.loads(path.read_text("utf-8")) if path.exists() else {}
        ours = old.get("kind") == DEMO_KIND or "distinct_neurons" in old  # (older versions wrote no kind)
        earlier = ours and old.get("languages") == summary["languages"]
        self.seconds: dict[str, float] = {k: v for k, v in (old.get("seconds") or {}).items()
                                          if k != "total"} if earlier else {}
        self.runs = int(old.get("runs", 1)) + 1 if earlier else 1

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds.pop("total", None)  # kept last
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 1)
            self.seconds["total"] = round(sum(self.seconds.values()), 1)
            write_kind(self.path, DEMO_KIND, self.record())

    def record(self) -> dict[str, Any]:
        """The summary with the seconds per stage (all runs together) and the number of runs."""
        return {**self.summary, "seconds": dict(self.seconds), "runs": self.runs}


def _finished_grid(path: Path, sources: Sequence[str], targets: Sequence[str]) -> dict[str, Any] | None:
    """The calibrated grid's summary from an earlier run of the same languages, if there is one."""
    if not path.exists():
        return None
    data = json.loads(path.read_text("utf-8"))
    settings = data.get("settings", {})
    if settings.get("sources") != list(sources) or settings.get("targets") != list(targets):
        return None
    print(f"  kept the grid of an earlier run ({path}); delete it to run the grid again")
    return data["summary"]["calibrated"]
