"""`langneurons report RUN_DIR`: one self-contained HTML page, and a Markdown twin, of what a run directory holds.

The page gathers statistics, neuron sets (with analysis figures drawn from them), calibrations, evaluation
results (`"kind": "results"` JSON, and the forcing.json / fallback.json of the forcing and fallback tasks) and
every PNG figure in the folder, with their settings and versions. Figures are embedded as data: URIs, so the page
needs no network and no other file; the Markdown file links them instead. A file the report cannot read is listed
with the reason and never stops it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from langneurons.core.artifacts import read_meta, write_atomic
from langneurons.core.errors import LangNeuronsError
from langneurons.report import findings
from langneurons.tasks.results import DEMO_KIND, FALLBACK_KIND, FORCING_KIND, RESULTS_KIND

if TYPE_CHECKING:
    from langneurons.steering.calibration import Calibration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FIGURE_CAPTIONS = {
    "neurons_per_layer": "Language neurons per layer (columns) and language (rows), with each language's total "
                         "on the right.",
    "share_per_layer": "Share of each layer's neurons that belong to each language, and to any language (black): "
                       "where language neurons cluster.",
    "overlap": "Jaccard overlap (shared / union) of the languages' neuron sets; rows and columns are ordered by "
               "average-linkage clustering, so languages with similar neurons sit together.",
    "script_specialisation": "Per layer, language neurons by the scripts of the languages they belong to: one or "
                             "several Latin-script languages, one or several other-script languages, or both.",
    "firing_rate": "Mean activation probability (share of tokens on which a neuron fires) per layer and language.",
    "translation": "chrF and the share of outputs in the target language per pair, unsteered and with the target "
                   "language activated.",
    "logit_lens": "Per layer, the scripts of the top candidates when each layer's hidden state is read through the "
                  "final norm and the LM head, and their entropy (dashed).",
    "fallback": "Share of output languages per step of cumulative deactivation.",
    "profiles": "For each language, its most specific neuron (the largest gap between its activation probability "
                "on that language and on any other): activation probability on every language.",
}


@dataclass
class Report:
    """What `build_report` wrote and what it read."""

    html: Path
    markdown: Path
    figures_dir: Path
    sections: list[str]
    figures: int
    tables: int
    used: dict[str, str]  # relative path -> where it is shown
    skipped: dict[str, str]  # relative path -> why it is not


@dataclass
class _Doc:
    """A small document model rendered to both HTML and Markdown."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def table(self, header: list[str], rows: list[list[Any]], caption: str = "", align: bool = True) -> None:
        """A table; with `align`, numbers are right-aligned."""
        if rows:
            self.blocks.append(("table", (header, rows, caption, align)))

    def fields(self, pairs: Mapping[str, Any], caption: str = "") -> None:
        """A two-column table of name/value pairs (None values left out)."""
        self.table(["field", "value"], [[k, v] for k, v in pairs.items() if v is not None], caption, align=False)

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(("figure", (path, caption)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def finding(self, finding: findings.Finding) -> None:
        self.blocks.append(("finding", finding))

    def fold(self, summary: str, part: _Doc) -> None:
        """`part` folded away under a one-line `summary` (<details>); nothing if `part` is empty."""
        if part.blocks:
            self.blocks += [("open", summary), *part.blocks, ("close", None)]

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.blocks if k == kind)


@dataclass
class _Item:
    """One file of the run directory and what it turned out to be."""

    path: Path
    rel: str
    kind: str = ""
    data: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


def build_report(run_dir: str | Path, output: str | Path | None = None) -> Report:
    """Write `output` (default RUN_DIR/report.html), the Markdown summary beside it (.md) and the figures drawn
    for it (`<output stem>_figures/`); returns what was written and which files were used or skipped."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LangNeuronsError(f"{run}: not a directory; pass the folder a run wrote its files to")
    out = Path(output) if output else run / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise LangNeuronsError(f"{out}: the report is an HTML file; name it *.html")
    md_path, fig_dir = out.with_suffix(".md"), out.with_name(f"{out.stem}_figures")
    state = _State(run, fig_dir)
    state.scan({out.resolve(), md_path.resolve()})
    doc = state.document()
    title = f"langneurons report: {run.resolve().name}"
    subtitle = f"{run.resolve()} · generated {time.strftime('%Y-%m-%d %H:%M:%S %z')} · langneurons {_version()}"
    page = _render_html(doc, title, subtitle)
    md = _render_markdown(doc, title, subtitle, md_path.parent)
    write_atomic(out, lambda p: p.write_text(page, "utf-8"))
    write_atomic(md_path, lambda p: p.write_text(md, "utf-8"))
    sections = [payload[1] for kind, payload in doc.blocks if kind == "heading" and payload[0] == 2]
    return Report(out, md_path, fig_dir, sections, doc.count("figure"), doc.count("table"), state.used, state.skipped)


def _version() -> str:
    from langneurons.core.version import __version__

    return __version__


class _State:
    """The files of a run directory, sorted into what each section shows."""

    def __init__(self, run: Path, fig_dir: Path):
        self.run, self.fig_dir = run, fig_dir
        self.items: dict[str, list[_Item]] = {}
        self.pngs: dict[Path, _Item] = {}  # figure files not yet placed in a section
        self.samples: list[_Item] = []
        self.used: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.n_found = 0

    # ---- reading -------------------------------------------------------------------------------------------
    def scan(self, exclude: set[Path]) -> None:
        fig_dir = self.fig_dir.resolve()
        files = sorted(p for p in self.run.rglob("*") if p.is_file())
        pngs = {p.with_suffix("") for p in files if p.suffix.lower() == ".png"}
        for path in files:
            rel = path.relative_to(self.run).as_posix()
            resolved = path.resolve()
            if (resolved in exclude or fig_dir in resolved.parents
                    or any(part.startswith(".") for part in path.relative_to(self.run).parts)):
                continue
            suffix = path.suffix.lower()
            item = _Item(path, rel)
            try:
                if suffix == ".safetensors":
                    self._safetensors(item)
                elif suffix == ".json":
                    self._json(item)
                elif suffix == ".png" or (suffix == ".svg" and path.with_suffix("") not in pngs):
                    head = path.read_bytes()[:512]
                    if suffix == ".png" and not head.startswith(PNG_MAGIC):
                        raise LangNeuronsError("not a PNG image")
                    if suffix == ".svg" and b"<svg" not in head and not head.lstrip().startswith(b"<?xml"):
                        raise LangNeuronsError("not an SVG image")
                    item.kind = "figure"
                    self.pngs[path] = item
                elif suffix == ".svg":
                    self.used[rel] = f"vector twin of {path.with_suffix('.png').name}"
                elif suffix == ".jsonl":
                    item.kind = "samples"
                    with path.open("rb") as f:
                        item.data = sum(1 for line in f if line.strip())
                    self.samples.append(item)
                elif path.name.endswith(".jsonl.settings"):
                    self.used[rel] = f"settings stamp of {path.name[:-len('.settings')]}"
                else:
                    raise LangNeuronsError(f"not a file type the report reads ({suffix or 'no suffix'})")
            except Exception as e:  # any failure is reported, never fatal
                self.skipped[rel] = _reason(e)
            else:
                if item.kind and item.kind not in ("figure", "samples"):
                    self.items.setdefault(item.kind, []).append(item)
        self.n_found = len(self.pngs)

    def _safetensors(self, item: _Item) -> None:
        from langneurons.identify.neurons import NeuronSet
        from langneurons.stats.activation import ActivationStats

        item.meta = read_meta(item.path)
        kind = item.meta.get("kind")
        if kind == "stats":
            item.kind, item.data = "stats", ActivationStats.load(item.path)
        elif kind == "neurons":
            item.kind, item.data = "neurons", NeuronSet.load(item.path)
        else:
            item.kind = "artifact"

    def _json(self, item: _Item) -> None:
        try:
            data = json.loads(item.path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LangNeuronsError(f"not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise LangNeuronsError(f"JSON holds a {type(data).__name__}, not an object")
        settings = data.get("settings")
        if not isinstance(settings, dict):
            settings = {}
        kind = data.get("kind") or _legacy_kind(data, settings)
        if kind == RESULTS_KIND:
            from langneurons.tasks.results import read_results

            item.kind, item.data = "results", read_results(item.path)
            if not isinstance(item.data.get("summary"), dict):
                raise LangNeuronsError("results without a 'summary' object")
        elif kind == "calibration":
            from langneurons.steering.calibration import Calibration

            item.kind, item.data = "calibration", Calibration.load(item.path)
        elif kind == FORCING_KIND:
            item.kind, item.data = "forcing", data
            if not isinstance(data.get("summary"), dict):
                raise LangNeuronsError("forcing output without a 'summary' object")
            for key in ("labels", "sources", "targets"):
                if not isinstance(settings.get(key), list):
                    raise LangNeuronsError(f"forcing output without settings.{key}")
        elif kind == FALLBACK_KIND:
            item.kind, item.data = "fallback", data
            if not isinstance(data.get("steps"), list):
                raise LangNeuronsError("fallback output without a 'steps' list")
        elif kind == DEMO_KIND:
            item.kind, item.data = "demo", data
        elif "lm_eval_version" in data and isinstance(data.get("results"), dict):
            self.used[item.rel] = "lm-evaluation-harness results (summarised in the lm-eval results)"
        elif kind == "steering settings":
            item.kind, item.data, item.meta = "artifact", data, {"kind": kind}
        else:
            raise LangNeuronsError(f"JSON of no known kind ({kind or 'no kind key'}); the report reads results, "
                                   "calibration, forcing, fallback, demo summary and steering settings")

    # ---- sections ------------------------------------------------------------------------------------------
    def document(self) -> _Doc:
        doc = _Doc()
        for item in self.items.get("demo", []):
            self.used[item.rel] = "Overview"
        for kind, title, render in (
            ("stats", "Activation statistics", self._stats_section),
            ("neurons", "Language neuron sets", self._neurons_section),
            ("calibration", "Calibration", self._calibration_section),
            ("eval", "Evaluations", None),
        ):
            items = ([i for k in ("forcing", "fallback", "results") for i in self.items.get(k, [])]
                     if kind == "eval" else self.items.get(kind, []))
            items.sort(key=lambda i: i.rel)
            if not items:
                continue
            doc.heading(2, title)
            for item in items:
                render_one = render or {"forcing": self._forcing, "fallback": self._fallback,
                                        "results": self._results}[item.kind]
                self._guarded(doc, item, title, render_one)
        artifacts = self.items.get("artifact", [])
        for item in artifacts:
            self.used[item.rel] = "Other artifacts"
        self._samples_left()
        if artifacts or self.pngs:
            doc.heading(2, "Other files")
            if artifacts:
                doc.heading(3, "Other artifacts")
                doc.table(["file", "kind", "model", "created", "langneurons"],
                          [[i.rel, i.meta.get("kind"), (i.meta.get("model") or {}).get("id"), i.meta.get("created"),
                            i.meta.get("library_version")] for i in artifacts])
            if self.pngs:
                doc.heading(3, "Other figures")
                for path in sorted(self.pngs):
                    self._place_figure(doc, self.pngs[path], f"Figure found at {self.pngs[path].rel}.",
                                       "Other figures")
                self.pngs.clear()
        doc.heading(2, "Files")
        if not self.used and not self.skipped:
            doc.text("The folder holds no files.")
        doc.table(["file", "shown in"], [[rel, where] for rel, where in sorted(self.used.items())],
                  "Every file of the run directory the report read.")
        if self.skipped:
            doc.table(["file", "reason"], [[rel, why] for rel, why in sorted(self.skipped.items())],
                      f"Skipped files ({len(self.skipped)}).")
        else:
            doc.text("No file was skipped.")
        top = _Doc()
        top.heading(2, "Findings")
        self._findings(top)
        top.heading(2, "Overview")
        self._overview(top, doc.count("figure"))
        return _Doc(top.blocks + doc.blocks)

    def _findings(self, doc: _Doc) -> None:
        """The headline numbers of the folder's results, each with its reading and small-sample warning."""
        out: list[findings.Finding] = []
        failed: list[str] = []
        for kind in ("neurons", "results", "forcing"):
            for item in sorted(self.items.get(kind, []), key=lambda i: i.rel):
                try:
                    out += self._item_findings(item)
                except Exception as e:  # a finding that cannot be computed is noted, never fatal
                    failed.append(f"{item.rel} ({_reason(e)})")
        order = ["Where", "Selectivity", "Forcing", "Translation", "Perplexity"]
        out.sort(key=lambda f: next((i for i, w in enumerate(order) if f.title.startswith(w)), len(order)))
        for f in out:
            doc.finding(f)
        if not out:
            doc.text("No result in this folder yields a headline yet: run `langneurons identify` or "
                     "`langneurons evaluate` (perplexity, forcing, translation) into it.")
        if failed:
            doc.text("Findings could not be computed from: " + "; ".join(failed) + ".")

    def _item_findings(self, item: _Item) -> list[findings.Finding]:
        if item.kind == "neurons":
            stats_item = self._stats_for(item.data, item.path.parent)
            tokens = (dict(zip(stats_item.data.languages, stats_item.data.n_tokens.tolist()))
                      if stats_item else None)
            found = findings.neuron_placement(item.data, item.rel, tokens)
            return [found] if found else []
        if item.kind == "forcing":
            return findings.forcing_success(item.data, item.rel)
        task, summary = item.data.get("task"), item.data["summary"]
        if task == "perplexity":
            return findings.deactivation_selectivity(summary, item.rel)
        if task == "translation":
            found = findings.translation_quality(summary, item.rel)
            return [found] if found else []
        return []

    def _guarded(self, doc: _Doc, item: _Item, section: str, render: Callable[[_Doc, _Item], None]) -> None:
        """Render one file's part; a failure drops the part and lists the file as skipped."""
        part = _Doc()
        try:
            render(part, item)
        except Exception as e:  # any failure is reported, never fatal
            self.skipped[item.rel] = _reason(e)
            return
        doc.blocks.extend(part.blocks)
        self.used.setdefault(item.rel, section)

    def _overview(self, doc: _Doc, n_figures: int) -> None:
        models = {str(m) for kind in ("stats", "neurons") for i in self.items.get(kind, [])
                  if (m := (i.meta.get("model") or {}).get("id"))}
        models |= {str(m) for i in self.items.get("results", []) if (m := (i.data.get("model") or {}).get("id"))}
        counts = {title: len(self.items.get(kind, [])) for kind, title in (
            ("stats", "statistics files"), ("neurons", "neuron sets"), ("calibration", "calibrations"),
            ("results", "evaluation results"), ("forcing", "forcing grids"), ("fallback", "fallback runs"))}
        doc.fields({"run directory": str(self.run.resolve()), "models": ", ".join(sorted(models)) or None,
                    **{k: v for k, v in counts.items() if v},
                    "figures": f"{n_figures} ({self.n_found} found in the folder, {n_figures - self.n_found} drawn "
                               "for this report)" if n_figures else None,
                    "files skipped": len(self.skipped) or None})
        for item in self.items.get("demo", []):
            seconds = item.data.get("seconds") or {}
            runs = item.data.get("runs", 1)
            doc.table(["stage", "seconds", "minutes"], [[k, float(v), float(v) / 60] for k, v in seconds.items()],
                      f"Time per stage of the demo ({item.rel}), wall clock"
                      + (f", summed over the {runs} runs that made this folder" if runs > 1 else "")
                      + "; the report's own time is counted in the next build.")

    def _stats_section(self, doc: _Doc, item: _Item) -> None:
        stats, meta = item.data, item.meta
        names = {lang: info.get("name") for lang, info in
                 ((meta.get("corpus") or {}).get("per_language") or {}).items() if isinstance(info, dict)}
        doc.heading(3, item.rel)
        corpus = meta.get("corpus") or {}
        collection = meta.get("collection") or {}
        doc.fields({
            "model": (meta.get("model") or {}).get("id"), "revision": (meta.get("model") or {}).get("revision"),
            "layers x neurons": f"{stats.n_layers} x {stats.n_neurons}",
            "corpus": " ".join(str(corpus[k]) for k in ("kind", "version") if corpus.get(k)) or None,
            **{f"collection: {k}": v for k, v in collection.items()},
            "merged from": meta.get("merged_from"), "created": meta.get("created"),
            "langneurons": meta.get("library_version"),
        }, "Settings and versions.")
        rows = [[r["language"], names.get(r["language"]), r["tokens"], r["mean_p"], r["mean_activation"]]
                for r in stats.summary()]
        doc.table(["language", "name", "tokens", "mean activation probability", "mean activation"], rows,
                  f"Per language: {int(stats.n_tokens.sum())} tokens in all.")
        self._figures(doc, item, {"firing_rate": lambda out: _figs().firing_rate_per_layer(stats, out)})

    def _neurons_section(self, doc: _Doc, item: _Item) -> None:
        figs = _figs()
        neurons, meta = item.data, item.meta
        stats_item = self._stats_for(neurons, item.path.parent)
        n_layers, n_neurons = neurons.shape
        doc.heading(3, item.rel)
        doc.fields({
            "method": meta.get("method"), **{f"setting: {k}": v for k, v in (meta.get("settings") or {}).items()},
            "model": (meta.get("model") or {}).get("id"), "revision": (meta.get("model") or {}).get("revision"),
            "layers x neurons": f"{n_layers} x {n_neurons}",
            "distinct neurons": f"{neurons.count()} ({100 * neurons.count() / (n_layers * n_neurons):.2f}% of all)",
            "statistics used for the profiles": stats_item.rel if stats_item else "none found",
            "created": meta.get("created"), "langneurons": meta.get("library_version"),
        }, "Settings and versions.")
        exclusive = neurons.exclusive()
        doc.table(["language", "script", "neurons", "only this language", "top layers"],
                  [[r["language"], "Latin" if figs.is_latin(r["language"]) else "other", r["neurons"],
                    exclusive.count(r["language"]), r["top_layers"]] for r in neurons.summary()],
                  "Neurons per language (a neuron may belong to several languages).")
        per_layer = neurons.per_layer().tolist()
        any_layer = neurons.masks.any(0).sum(-1).tolist()
        doc.table(["language", *map(str, range(n_layers))],
                  [[lang, *row] for lang, row in zip(neurons.languages, per_layer)] + [["any", *any_layer]],
                  "Neurons per language and layer.")
        stats = stats_item.data if stats_item else None
        drawers: dict[str, Callable[[Path], list[Path]]] = {
            "neurons_per_layer": lambda out: figs.neurons_per_layer(neurons, out),
            "share_per_layer": lambda out: figs.share_per_layer(neurons, out),
            "overlap": lambda out: figs.overlap_matrix(neurons, out),
            "script_specialisation": lambda out: figs.script_specialisation(neurons, out),
        }
        if stats is not None:
            units = [(layer, j) for _, layer, j in figs.signature_neurons(stats, neurons)]
            if units:
                drawers["profiles"] = lambda out: figs.activation_profile(stats, units, out, neurons)
        if len(neurons.languages) < 2:
            del drawers["overlap"]
        self._figures(doc, item, drawers)

    def _stats_for(self, neurons: Any, folder: Path) -> _Item | None:
        """Statistics that fit a neuron set (same shape and model, all its languages), preferring its folder."""
        model = (neurons.meta.get("model") or {}).get("id")
        fits = [i for i in self.items.get("stats", [])
                if (i.data.n_layers, i.data.n_neurons) == neurons.shape
                and (not model or not i.data.model_id or i.data.model_id == model)
                and set(neurons.languages) <= set(i.data.languages)]
        fits.sort(key=lambda i: (i.path.parent != folder, i.rel))
        return fits[0] if fits else None

    def _figures(self, doc: _Doc, item: _Item, drawers: Mapping[str, Callable[[Path], list[Path]]]) -> None:
        """Draw figures of an artifact into the figures folder and place them (a figure that fails is noted);
        figures found beside it whose name starts with its name follow, except those redrawn here."""
        prefix = re.sub(r"[^A-Za-z0-9]+", "_", item.rel.rsplit(".", 1)[0]).strip("_") + "__"
        for name, draw in drawers.items():
            try:
                png = draw(self.fig_dir / f"{prefix}{name}.png")[0]
            except Exception as e:  # any failure is reported, never fatal
                doc.text(f"The {name.replace('_', ' ')} figure could not be drawn: {_reason(e)}")
                continue
            doc.figure(png, FIGURE_CAPTIONS.get(name, name))
        for path in self._beside(item):
            if path.stem in drawers:
                self.used[self.pngs.pop(path).rel] = f"redrawn in {item.rel}"
        self._found_figures(doc, item)

    def _beside(self, item: _Item) -> list[Path]:
        """Figures in the same folder whose name starts with the item's name (forcing.json: forcing_0.png)."""
        stem = item.path.name.split(".")[0]
        return sorted(p for p in self.pngs if p.parent == item.path.parent
                      and (p.stem.startswith(stem) or (item.kind == "neurons" and p.stem == "neurons_per_layer")))

    def _found_figures(self, doc: _Doc, item: _Item, captions: Mapping[str, str] | None = None) -> int:
        placed = 0
        for path in self._beside(item):
            delta = ("Change of the task's metric per evaluated language (rows) when each language is activated "
                     "(columns).")
            caption = ((captions or {}).get(path.stem) or FIGURE_CAPTIONS.get(path.stem)
                       or (delta if path.stem.endswith("_delta") else f"Figure saved with {item.rel}."))
            self._place_figure(doc, self.pngs.pop(path), caption, item.rel)
            placed += 1
        return placed

    def _place_figure(self, doc: _Doc, fig: _Item, caption: str, where: str) -> None:
        doc.figure(fig.path, caption)
        self.used[fig.rel] = where

    def _attach_samples(self, doc: _Doc, item: _Item) -> None:
        stem = item.path.name.split(".")[0]
        mine = [s for s in self.samples if s.path.parent == item.path.parent and s.path.name.startswith(stem)]
        for s in mine:
            self.samples.remove(s)
            self.used[s.rel] = item.rel
        if mine:
            doc.text("Per-sample rows: " + "; ".join(f"{s.rel} ({s.data} rows)" for s in mine) + ".")

    def _samples_left(self) -> None:
        for s in self.samples:
            self.skipped[s.rel] = "per-sample rows without a summary JSON of the same name beside them"
        self.samples.clear()

    def _calibration_section(self, doc: _Doc, item: _Item) -> None:
        cal: Calibration = item.data
        doc.heading(3, item.rel)
        meta = dict(cal.meta)
        meta.pop("statistics", None)
        doc.fields(meta, "How the candidates were measured.")
        rows = []
        for target, setting in cal.settings.items():
            label = setting.label()
            score = next((s for s in cal.scores.get(target, []) if s.get("setting") == label), {})
            dev = score.get("stage2") or score.get("stage1") or {}
            rows.append([target, label, setting.method, setting.alpha, setting.top_rate,
                         setting.layers and f"{setting.layers[0]}-{setting.layers[1] - 1}", setting.deactivate_source,
                         dev.get("fluent_success"), dev.get("success")])
        doc.table(["target", "chosen setting", "method", "alpha", "top rate", "layers", "deactivate source",
                   "dev fluent success", "dev success"], rows, "The setting chosen per target language.")
        labels = list(dict.fromkeys(s["setting"] for scores in cal.scores.values() for s in scores))
        grid = []
        for target, scores in cal.scores.items():
            by_label = {s["setting"]: (s.get("stage2") or s.get("stage1") or {}).get("fluent_success") for s in scores}
            grid.append([target, *(by_label.get(lab) for lab in labels)])
        doc.table(["target", *labels], grid,
                  "Fluent success of every candidate on the dev prompts (all prompts for the shortlisted, one per "
                  "source language for the others).")
        self._found_figures(doc, item)

    def _forcing(self, doc: _Doc, item: _Item) -> None:
        data = item.data
        settings, summary = data["settings"], data["summary"]
        doc.heading(3, f"Forcing: {item.rel}")
        doc.fields({k: v for k, v in settings.items() if _is_cell(v)}, "Settings.")
        doc.table(["setting", "success", "fluent success", "lowest target's fluent success"],
                  [[label, s.get("success"), s.get("fluent_success"), s.get("min_target_fluent_success")]
                   for label, s in summary.items() if isinstance(s, dict)],
                  "Off-diagonal means (prompt language different from the target).")
        targets = settings["targets"]
        doc.table(["setting", *targets],
                  [[label, *((s.get("per_target") or {}).get(t, {}).get("fluent_success") for t in targets)]
                   for label, s in summary.items() if isinstance(s, dict)],
                  "Fluent success per target language.")
        self._attach_samples(doc, item)
        stem = item.path.name.split(".")[0]
        captions = {f"{stem}_{i}": f"Fluent success per prompt language (rows) and target language (columns): "
                                   f"setting '{label}'." for i, label in enumerate(settings["labels"])}
        self._found_figures(doc, item, captions)

    def _fallback(self, doc: _Doc, item: _Item) -> None:
        data = item.data
        doc.heading(3, f"Fallback ({data.get('language')}): {item.rel}")
        doc.fields({k: v for k, v in (data.get("settings") or {}).items() if _is_cell(v)}, "Settings.")
        rows = []
        for step in data["steps"]:
            dist = step.get("distribution") or {}
            top = ", ".join(f"{lang} {share:.2f}" for lang, share in
                            sorted(((k, v) for k, v in dist.items() if k != "none"), key=lambda kv: -kv[1])[:4])
            rows.append([step.get("step"), step.get("label"), top, dist.get("none", 0.0), step.get("empty")])
        doc.table(["step", "deactivated", "most frequent output languages (share)", "no language", "empty"], rows,
                  "Output languages after each step of cumulative deactivation.")
        self._attach_samples(doc, item)
        if not self._found_figures(doc, item):
            self._figures(doc, item, {"fallback": lambda out: _plots().fallback_bars(data, out)})

    def _compare(self, doc: _Doc, item: _Item) -> None:
        """`langneurons compare`: the table of each evaluated model, then the bar plot saved beside it."""
        from langneurons.tasks.compare import selectivity_table

        for result in item.data["summary"].get("results", []):
            rows = selectivity_table(result)
            role = " (transfer)" if result.get("transfer") else ""
            doc.table(list(rows[0]) if rows else ["set"], [list(r.values()) for r in rows],
                      f"Masking selectivity per language (own / others' loss increase) on {result.get('model')}{role}"
                      f"{' and forcing fluent success of -src +tgt' if result.get('forcing') else ''}; "
                      "95% bootstrap intervals over held-out windows and prompts.")
        for path in [p for p in self.pngs if p.parent == item.path.parent and p.stem == "selectivity"]:
            self._place_figure(doc, self.pngs.pop(path), "Masking selectivity per language and set (log scale; 1: "
                               "not selective) and forcing fluent success per set, with 95% intervals.", item.rel)

    def _perplexity(self, doc: _Doc, summary: Mapping[str, Any], item: _Item) -> dict[str, str]:
        """Readable tables of a perplexity result; returns the captions of its heatmaps."""
        _perplexity_tables(doc, summary)
        stem = item.path.name.split(".")[0]
        return {f"{stem}_{name}": f"ΔNLL per token with the '{name}' set ({s.get('method')}) deactivated: rows "
                                  "deactivated language, columns evaluated language; one colour scale for all sets."
                for name, s in (summary.get("sets") or {}).items()}

    def _results(self, doc: _Doc, item: _Item) -> None:
        data = item.data
        model = data.get("model") or {}
        doc.heading(3, f"{data.get('task', 'results')}: {item.rel}")
        settings = data.get("settings") or {}
        doc.fields({"task": data.get("task"), "model": model.get("id"), "revision": model.get("revision"),
                    "date": data.get("date"), **{k: v for k, v in settings.items() if _is_cell(v)}},
                   "Run and settings.")
        more = _Doc()
        for k, v in settings.items():
            if not _is_cell(v):
                more.text(f"{k}:")
                more.pre(json.dumps(v, ensure_ascii=False, indent=1, sort_keys=True))
        more.fields(data.get("versions") or {}, "Versions.")
        doc.fold("Versions and structured settings", more)
        if data.get("task") == "compare":
            self._compare(doc, item)
            return
        raw = _Doc()
        matrices: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
        _generic(raw, data["summary"], 5, "", matrices)
        captions: dict[str, str] = {}
        if data.get("task") == "perplexity":
            captions = self._perplexity(doc, data["summary"], item)
            doc.fold("All numbers of the summary (raw tables)", raw)
        else:
            doc.heading(4, "Summary")
            doc.blocks += raw.blocks
        self._attach_samples(doc, item)
        if not self._found_figures(doc, item, captions):
            drawers = {}
            for name, table in matrices:
                values = [v for row in table.values() for v in row.values() if v is not None]
                diverging = any(v < 0 for v in values) and any(v > 0 for v in values)
                drawers[name] = (lambda t, n, d: lambda out: _figs().table_heatmap(
                    t, out, f"{data.get('task', '')}: {n}", diverging=d))(table, name, diverging)
            self._figures(doc, item, drawers)


def _legacy_kind(data: Mapping[str, Any], settings: Mapping[str, Any]) -> str | None:
    """The kind of a JSON written before every file named its kind (forcing.json, fallback.json, summary.json)."""
    if settings.get("task") == "forcing":
        return FORCING_KIND
    if data.get("task") == "fallback":
        return FALLBACK_KIND
    if isinstance(data.get("seconds"), dict) and "distinct_neurons" in data:
        return DEMO_KIND
    return None


def _perplexity_tables(doc: _Doc, summary: Mapping[str, Any]) -> None:
    """The readable part of a perplexity result: the headline per set, each set's delta matrix, the baseline."""
    sets, tokens, baseline = summary.get("sets") or {}, summary.get("tokens") or {}, summary.get("baseline") or {}
    doc.table(["set", "method", "own language ΔNLL", "other languages ΔNLL", "ratio", "own hurt most"],
              [[name, s.get("method"), s.get("diagonal_mean"), s.get("off_diagonal_mean"), s.get("ratio"),
                f"{s.get('own_hurt_most')} of {len(s.get('delta') or {})}"] for name, s in sets.items()],
              "Mean change of the NLL per token (nats) when each language's neurons are deactivated: on that "
              "language (own) and on the others.")
    for name, s in sets.items():
        delta = s.get("delta") or {}
        cols = list(dict.fromkeys(c for row in delta.values() for c in row))
        doc.table(["deactivated \\ evaluated", *cols],
                  [[x, *(row.get(c) for c in cols)] for x, row in delta.items()],
                  f"ΔNLL per token, set '{name}' ({s.get('method')}): rows deactivated, columns evaluated.")
    doc.table(["language", "held-out tokens", "baseline NLL"],
              [[lang, tokens.get(lang), baseline.get(lang)] for lang in summary.get("languages") or baseline],
              "Held-out text per language and its NLL per token with nothing deactivated.")


def _figs():
    from langneurons.figures import neurons as figures

    return figures


def _plots():
    from langneurons.figures import charts as plots

    return plots


def _reason(e: Exception) -> str:
    text = str(e) if isinstance(e, LangNeuronsError) else f"{type(e).__name__}: {e}"
    return " ".join(text.split())[:300]


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _is_cell(v: Any) -> bool:
    """A value shown in one table cell: a scalar or a short list of scalars."""
    return _is_scalar(v) or (isinstance(v, (list, tuple)) and len(v) <= 24 and all(_is_scalar(x) for x in v))


def _compact(v: Any, limit: int = 300) -> str:
    text = json.dumps(v, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flat(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v) and all(_is_scalar(x) for x in v.values())


def _matrix(v: Any) -> bool:
    return isinstance(v, Mapping) and bool(v) and all(_flat(r) for r in v.values())


def _generic(doc: _Doc, value: Mapping[str, Any], level: int, path: str,
             matrices: list[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> None:
    """Any JSON summary as tables: scalars as fields, {row: {col: scalar}} as a matrix, {a: {b: {col: scalar}}} as
    rows (a, b), lists of flat objects as rows, deeper objects under their own heading; numeric matrices (2 x 2 or
    more) are collected in `matrices`."""
    doc.fields({k: v for k, v in value.items() if _is_cell(v)})
    for key, v in value.items():
        if _is_cell(v):
            continue
        name = f"{path} / {key}" if path else str(key)
        doc.heading(min(level, 6), name)
        if _matrix(v):
            cols = list(dict.fromkeys(c for r in v.values() for c in r))
            doc.table(["", *cols], [[row, *(v[row].get(c) for c in cols)] for row in v])
            numeric = all(_numeric(x) or x is None for r in v.values() for x in r.values())
            if numeric and len(v) >= 2 and len(cols) >= 2:
                matrices.append((name, v))
        elif isinstance(v, Mapping) and v and all(_matrix(m) for m in v.values()):
            cols = list(dict.fromkeys(c for m in v.values() for r in m.values() for c in r))
            doc.table(["", "", *cols], [[outer, inner, *(r.get(c) for c in cols)]
                                        for outer, m in v.items() for inner, r in m.items()])
        elif isinstance(v, list) and v and all(isinstance(r, Mapping) and all(_is_cell(x) for x in r.values())
                                               for r in v):
            cols = list(dict.fromkeys(c for r in v for c in r))
            doc.table(cols, [[r.get(c) for c in cols] for r in v])
        elif isinstance(v, Mapping) and level < 7:
            _generic(doc, v, level + 1, name, matrices)
        else:
            doc.pre(_compact(v, 4000))


# ---- rendering ---------------------------------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.4e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v) if all(_is_scalar(x) for x in v) else _compact(v)
    if isinstance(v, Mapping):
        return _compact(v)
    return str(v)


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _column_formats(rows: list[list[Any]]) -> list[str | None]:
    """A format per column of numbers, so that a column reads alike: integers with thousands separators; floats
    with one number of decimals (three significant digits of the column's largest value, 1 to 4 decimals),
    signed where the column holds both signs. None for columns without floats."""
    out: list[str | None] = []
    for col in zip(*rows):
        floats = [float(v) for v in col if _numeric(v)]
        if not any(isinstance(v, float) for v in col if _numeric(v)):
            out.append("{:,}" if floats else None)
            continue
        top = max((abs(v) for v in floats if math.isfinite(v)), default=0.0)
        decimals = 2 if top == 0 else min(4, max(1, 2 - math.floor(math.log10(top))))
        sign = "+" if any(v < 0 for v in floats) and any(v > 0 for v in floats) else ""
        out.append(f"{{:{sign},.{decimals}f}}")
    return out


def _formatted(v: Any, fmt: str | None) -> str:
    """A table cell: numbers in their column's format, anything else as `_cell` writes it."""
    if fmt is None or not _numeric(v) or (isinstance(v, float) and not math.isfinite(v)):
        return _cell(v)
    return fmt.format(v)


def _anchors(doc: _Doc) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for kind, payload in doc.blocks:
        if kind == "heading":
            base = re.sub(r"[^a-z0-9]+", "-", payload[1].lower()).strip("-") or "section"
            seen[base] = seen.get(base, 0) + 1
            out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


def _data_uri(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _render_html(doc: _Doc, title: str, subtitle: str) -> str:
    esc = html.escape
    anchors = iter(_anchors(doc))
    toc: list[str] = []
    body: list[str] = []
    n_fig = n_tab = 0
    for kind, payload in doc.blocks:
        if kind == "heading":
            level, text = payload
            anchor = next(anchors)
            body.append(f'<h{level} id="{anchor}">{esc(text)}</h{level}>')
            if level <= 3:
                toc.append(f'<li class="l{level}"><a href="#{anchor}">{esc(text)}</a></li>')
        elif kind == "text":
            body.append(f"<p>{esc(payload)}</p>")
        elif kind == "pre":
            body.append(f"<pre>{esc(payload)}</pre>")
        elif kind == "finding":
            warn = f'<p class="warn">Small sample: {esc(payload.warning)}</p>' if payload.warning else ""
            body.append(f'<div class="finding"><p><b>{esc(payload.title)}.</b> {esc(payload.reading)} '
                        f'<span class="src">{esc(payload.source)}</span></p>{warn}</div>')
        elif kind == "open":
            body.append(f"<details><summary>{esc(payload)}</summary>")
        elif kind == "close":
            body.append("</details>")
        elif kind == "table":
            header, rows, caption, align = payload
            n_tab += 1
            fmts = _column_formats(rows) if align else [None] * len(header)
            head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
            lines = "".join(
                "<tr>" + "".join(f'<td class="num">{esc(_formatted(c, f))}</td>' if align and _numeric(c)
                                 else f"<td>{esc(_cell(c))}</td>" for c, f in zip(row, fmts)) + "</tr>"
                for row in rows)
            cap = f'<p class="cap">{esc(caption)}</p>' if caption else ""
            body.append(f'<div class="table">{cap}<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody>'
                        "</table></div>")
        elif kind == "figure":
            path, caption = payload
            n_fig += 1
            body.append(f'<figure id="figure-{n_fig}"><img src="{_data_uri(path)}" alt="{esc(caption)}">'
                        f"<figcaption><b>Figure {n_fig}.</b> {esc(caption)} <span class=\"src\">{esc(path.name)}"
                        "</span></figcaption></figure>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>'
        f'<p class="sub">{n_fig} figures · {n_tab} tables</p></header>\n'
        f'<div class="layout">\n<nav><h2>Contents</h2><ul>{"".join(toc)}</ul></nav>\n'
        f'<main>\n{chr(10).join(body)}\n</main>\n</div>\n</body>\n</html>\n'
    )


_MD_SPECIAL = re.compile(r"[\\`*\[\]<>|&~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: str) -> str:
    """Plain text (labels, file names) as Markdown that shows it literally: characters that would start markup
    backslash-escaped, line starts that would open a heading, list or quote made inert, newlines as spaces."""
    escaped = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), str(text).replace("\n", " "))
    return re.sub(r"^(\s*)([-=+#]|\d+\.)(?=\s|$)", lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1],
                  escaped)


def _render_markdown(doc: _Doc, title: str, subtitle: str, md_dir: Path) -> str:
    def cell(v: Any, fmt: str | None = None) -> str:
        return md_escape(_formatted(v, fmt))

    out = [f"# {md_escape(title)}", "", md_escape(subtitle), ""]
    n_fig = 0
    for kind, payload in doc.blocks:
        if kind == "heading":
            out += ["#" * payload[0] + " " + md_escape(payload[1]), ""]
        elif kind == "text":
            out += [md_escape(payload), ""]
        elif kind == "pre":
            out += ["```", payload, "```", ""]
        elif kind == "finding":
            out += [f"**{md_escape(payload.title)}.** {md_escape(payload.reading)} ({md_escape(payload.source)})", ""]
            if payload.warning:
                out += [f"> Small sample: {md_escape(payload.warning)}", ""]
        elif kind == "open":
            out += [f"<details><summary>{html.escape(payload)}</summary>", ""]
        elif kind == "close":
            out += ["</details>", ""]
        elif kind == "table":
            header, rows, caption, align = payload
            if caption:
                out += [f"*{md_escape(caption)}*", ""]
            fmts = _column_formats(rows) if align else [None] * len(header)
            marks = ["---:" if align and _numeric(rows[0][i]) else "---" for i in range(len(header))]
            out += ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(marks) + "|",
                    *("| " + " | ".join(cell(c, f) for c, f in zip(row, fmts)) + " |" for row in rows), ""]
        elif kind == "figure":
            path, caption = payload
            n_fig += 1
            rel = quote(Path(os.path.relpath(path.resolve(), md_dir.resolve())).as_posix())
            out += [f"![Figure {n_fig}]({rel})", "", f"*Figure {n_fig}. {md_escape(caption)}*", ""]
    return "\n".join(out)


_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --bg: #ffffff; --panel: #f6f8fa; --line: #d0d7de; --accent: #0969da; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #8d96a0; --bg: #0d1117; --panel: #161b22; --line: #30363d; --accent: #4493f8; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { padding: 1.4rem 2rem 1rem; border-bottom: 1px solid var(--line); background: var(--panel); }
header h1 { margin: 0 0 .3rem; font-size: 1.6rem; }
.sub { margin: 0; color: var(--muted); font-size: .9rem; }
.layout { display: flex; align-items: flex-start; }
nav { position: sticky; top: 0; flex: 0 0 250px; max-height: 100vh; overflow-y: auto; padding: 1rem 1.2rem;
      border-right: 1px solid var(--line); font-size: .88rem; }
nav h2 { font-size: .8rem; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 0 0 .5rem; }
nav ul { list-style: none; margin: 0; padding: 0; }
nav li.l3 { padding-left: 1rem; font-size: .82rem; }
nav a { color: var(--fg); text-decoration: none; display: block; padding: .1rem 0; overflow-wrap: anywhere; }
nav a:hover { color: var(--accent); }
main { flex: 1; min-width: 0; max-width: 1150px; padding: 0 2rem 3rem; }
h2 { margin: 2.2rem 0 .8rem; padding-bottom: .3rem; border-bottom: 1px solid var(--line); font-size: 1.35rem; }
h3 { margin: 1.8rem 0 .6rem; font-size: 1.1rem; overflow-wrap: anywhere; }
h4, h5, h6 { margin: 1.2rem 0 .4rem; font-size: .98rem; color: var(--muted); }
.table { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .85rem; }
.cap { margin: 0 0 .3rem; color: var(--muted); font-size: .85rem; }
th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: var(--panel); }
figure { margin: 1rem 0 1.6rem; padding: .8rem; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: .5rem; color: #444c56; font-size: .85rem; }
.src { color: #8c959f; font-family: ui-monospace, monospace; font-size: .78rem; }
.finding { margin: .5rem 0 .8rem; padding: .5rem .8rem; border-left: 4px solid var(--accent);
           background: var(--panel); }
.finding p { margin: .2rem 0; }
.warn { color: #9a6700; font-size: .88rem; }
details { margin: .6rem 0 1rem; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--panel); border: 1px solid var(--line); padding: .6rem; overflow-x: auto; font-size: .8rem; }
@media (max-width: 900px) { .layout { display: block; } nav { position: static; max-height: none; border: 0; } }
"""
