"""Translation: source -> target prompts, corpus-level chrF and BLEU, unsteered against steered towards the target.

Data (segments aligned across languages by id):
- `udhr` (offline, embedded): the UDHR's paragraphs, id "N" for a one-paragraph article and "N.P" for paragraph P
  of article N (a whole article where the languages split it differently). `split` "heldout" keeps the articles
  that statistics collected on the UDHR left out (every 10th document: articles 9, 19 and 29), "train" the
  others, "all" (default) every article. Article 1 is the few-shot example and never evaluated.
- `flores`: FLORES+ (`openlanguagedata/flores_plus`, gated: accept its terms and log in), split "devtest"
  (default) or "dev", one config per language (`deu_Latn`, ...), aligned by the "id" column.
- a path: a JSONL file, or a folder of .jsonl files, with rows {"id": ..., "lang": "de", "text": "..."}; rows with
  the same id are translations of each other, ids in order of first appearance.
For flores and files the first id is the few-shot example and never evaluated.

Each prompt fills `template` (fields {src_name}, {tgt_name}, {src}, {tgt}, {source}) after `shots` filled
examples; greedy generation stops at the end of the line. Every pair is generated unsteered ("baseline") and
steered: the target's neurons activated ("+tgt"), optionally the source's deactivated first ("-src +tgt").
chrF and BLEU are corpus-level sacrebleu scores (`langneurons.tasks.metrics`); each output's language is identified,
since that is what steering changes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from langneurons.core.distributed import is_main, rounds
from langneurons.core.errors import LangNeuronsError
from langneurons.core.models import model_id
from langneurons.core.provenance import model_meta
from langneurons.identify.lape import lape_at_share
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import ForcingSetting, SteeringConfig
from langneurons.steering.generation import generate, generation_settings, prompt_settings, resolve_prompt_format
from langneurons.tasks.lid import get_identifier
from langneurons.tasks.metrics import bleu_tokenizer, translation_scores
from langneurons.tasks.results import SampleLog, run_metadata, write_results

DEFAULT_TEMPLATE = "Translate from {src_name} to {tgt_name}.\n{src_name}: {source}\n{tgt_name}:"
STOP = ["\n"]  # sources are single lines, so a translation ends with its line
SETTINGS = ("baseline", "steered")
FLORES = "openlanguagedata/flores_plus"
ACTIVATE = ForcingSetting(deactivate_source=False)  # "+tgt": add the target's mean activation (alpha 1)

# code -> (English name for prompts, FLORES+ config)
LANGUAGES: dict[str, tuple[str, str]] = {
    "en": ("English", "eng_Latn"), "de": ("German", "deu_Latn"), "fr": ("French", "fra_Latn"),
    "es": ("Spanish", "spa_Latn"), "it": ("Italian", "ita_Latn"), "pt": ("Portuguese", "por_Latn"),
    "nl": ("Dutch", "nld_Latn"), "sv": ("Swedish", "swe_Latn"), "da": ("Danish", "dan_Latn"),
    "fi": ("Finnish", "fin_Latn"), "pl": ("Polish", "pol_Latn"), "cs": ("Czech", "ces_Latn"),
    "ro": ("Romanian", "ron_Latn"), "hu": ("Hungarian", "hun_Latn"), "tr": ("Turkish", "tur_Latn"),
    "vi": ("Vietnamese", "vie_Latn"), "id": ("Indonesian", "ind_Latn"), "sw": ("Swahili", "swh_Latn"),
    "ru": ("Russian", "rus_Cyrl"), "uk": ("Ukrainian", "ukr_Cyrl"), "bg": ("Bulgarian", "bul_Cyrl"),
    "el": ("Greek", "ell_Grek"), "ar": ("Arabic", "arb_Arab"), "fa": ("Persian", "pes_Arab"),
    "he": ("Hebrew", "heb_Hebr"), "ur": ("Urdu", "urd_Arab"), "hi": ("Hindi", "hin_Deva"),
    "bn": ("Bengali", "ben_Beng"), "ta": ("Tamil", "tam_Taml"), "th": ("Thai", "tha_Thai"),
    "zh": ("Chinese", "cmn_Hans"), "ja": ("Japanese", "jpn_Jpan"), "ko": ("Korean", "kor_Hang"),
}
_BY_FLORES = {flores: code for code, (_, flores) in LANGUAGES.items()}


# ----------------------------------------------------------------------------------------------------------
# Parallel data


@dataclass
class ParallelData:
    """Segments aligned across languages: `texts[lang][id]`; `ids` to evaluate, in order; `examples`: ids kept
    for few-shot prompts (never evaluated); `description`: where the data came from (JSON)."""

    texts: dict[str, dict[str, str]]
    ids: list[str]
    examples: list[str]
    description: dict[str, Any]

    def segments(self, source: str, target: str, n: int | None = None) -> list[tuple[str, str, str]]:
        """(id, source text, reference) of the first `n` evaluation ids both languages have."""
        src, tgt = self._language(source), self._language(target)
        rows = [(i, src[i], tgt[i]) for i in self.ids if i in src and i in tgt]
        return rows if n is None else rows[:n]

    def example_pairs(self, source: str, target: str, k: int) -> list[tuple[str, str]]:
        """The first `k` example (source, target) pairs."""
        src, tgt = self._language(source), self._language(target)
        pairs = [(src[i], tgt[i]) for i in self.examples if i in src and i in tgt][:k]
        if len(pairs) < k:
            raise LangNeuronsError(f"the data has {len(pairs)} example segment(s) for {source}-{target}; "
                                   f"use shots <= {len(pairs)}")
        return pairs

    def _language(self, lang: str) -> dict[str, str]:
        if lang not in self.texts:
            raise LangNeuronsError(f"the translation data has no language '{lang}'; it has {', '.join(self.texts)}")
        return self.texts[lang]


def udhr_parallel(languages: Sequence[str], split: str = "all", udhr_dir: str | Path | None = None) -> ParallelData:
    """The embedded UDHR as paragraphs aligned across `languages` (see the module docstring for ids and splits)."""
    from langneurons.data.udhr import udhr, udhr_articles

    if split not in ("all", "train", "heldout"):
        raise LangNeuronsError(f"UDHR split {split!r}; use all, train or heldout")
    articles = udhr_articles(languages, udhr_dir)
    corpus = udhr(languages, udhr_dir)
    heldout_docs = {lang: set(corpus.documents(lang, "heldout")) for lang in languages}
    held = [{k for k, text in articles[lang].items() if text in heldout_docs[lang]} for lang in languages]
    heldout, held_somewhere = set.intersection(*held), set.union(*held)
    numbers = sorted(set.intersection(*[set(a) for a in articles.values()]))
    if len(numbers) < 2:
        raise LangNeuronsError(f"the UDHR of {', '.join(languages)} shares fewer than two articles; pick others")
    texts: dict[str, dict[str, str]] = {lang: {} for lang in languages}
    ids_of: dict[int, list[str]] = {}
    for k in numbers:
        paragraphs = {lang: articles[lang][k].split("\n") for lang in languages}
        counts = {len(parts) for parts in paragraphs.values()}
        if counts == {1} or len(counts) > 1:  # one paragraph, or split differently: the whole article
            ids_of[k] = [str(k)]
            for lang, parts in paragraphs.items():
                texts[lang][str(k)] = _one_line(" ".join(parts))
        else:
            ids_of[k] = [f"{k}.{p}" for p in range(1, counts.pop() + 1)]
            for lang, parts in paragraphs.items():
                texts[lang].update(zip(ids_of[k], map(_one_line, parts)))
    example = min(numbers, key=lambda k: (k in held_somewhere, k))  # article 1
    chosen = {"all": numbers, "heldout": sorted(heldout), "train": [k for k in numbers if k not in held_somewhere]}
    keep = [k for k in chosen[split] if k != example]
    description = {"source": "udhr", "split": split, "version": corpus.description.get("version"),
                   "languages": corpus.description["per_language"], "heldout_articles": sorted(heldout),
                   "articles": keep, "example_article": example}
    return ParallelData(texts, [i for k in keep for i in ids_of[k]], ids_of[example], description)


def flores_parallel(languages: Sequence[str], split: str = "devtest", name: str = FLORES,
                    **load_kwargs: Any) -> ParallelData:
    """FLORES+ from the Hugging Face hub: one config per language (ISO 639-1 codes are mapped with `LANGUAGES`,
    FLORES codes such as "deu_Latn" pass through), rows aligned by "id"; the first id is the few-shot example."""
    try:
        import datasets
    except ImportError:
        raise LangNeuronsError("FLORES+ needs `datasets`; pip install 'langneurons[hf]'") from None
    texts: dict[str, dict[str, str]] = {}
    configs = {lang: flores_code(lang) for lang in languages}
    for lang, config in configs.items():
        try:
            rows = datasets.load_dataset(name, config, split=split, **load_kwargs)
        except Exception as e:  # datasets raises many types (gated, offline, unknown config)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LangNeuronsError(
                f"could not load {name} config {config!r} split {split!r}: {reason}; it is gated (accept its terms "
                "on the hub and log in), needs a connection, and splits are dev and devtest"
            ) from None
        texts[lang] = {str(row["id"]): _one_line(row["text"]) for row in rows}
    order = list(texts[languages[0]])
    shared = [i for i in order if all(i in t for t in texts.values())]
    if len(shared) < 2:
        raise LangNeuronsError(f"{name}: fewer than two ids shared by {', '.join(languages)}; check the configs")
    shown = {k: v for k, v in load_kwargs.items() if k not in ("token", "use_auth_token")}
    description = {"source": "flores", "name": name, "split": split, "configs": configs,
                   "datasets_version": datasets.__version__, "load_kwargs": json.loads(json.dumps(shown, default=str))}
    return ParallelData(texts, shared[1:], shared[:1], description)


def local_parallel(path: str | Path) -> ParallelData:
    """Segments from a JSONL file, or a folder of .jsonl files, of rows {"id", "lang", "text"}; the first id is the
    few-shot example."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix == ".jsonl" and p.is_file())
        if not files:
            raise LangNeuronsError(f"{root}: no .jsonl files; add files of {{\"id\", \"lang\", \"text\"}} rows")
    elif root.is_file():
        files = [root]
    else:
        raise LangNeuronsError(f"{root}: no such file or folder; pass 'udhr', 'flores' or a JSONL path")
    texts: dict[str, dict[str, str]] = {}
    order: dict[str, None] = {}
    for file in files:
        for number, line in enumerate(_lines(file), 1):
            if not line.strip():
                continue
            where = f"{file}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise LangNeuronsError(f"{where}: not valid JSON; write one object per line") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("lang", "text")) \
                    or not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool):
                raise LangNeuronsError(f'{where}: write {{"id": "1", "lang": "de", "text": "..."}} (id a string or '
                                       "integer, lang and text strings)")
            seg, lang = str(row["id"]), row["lang"]
            if seg in texts.setdefault(lang, {}):
                raise LangNeuronsError(f"{where}: id {seg!r} appears twice for language '{lang}'; keep one")
            texts[lang][seg] = _one_line(row["text"])
            order.setdefault(seg)
    ids = list(order)
    if len(ids) < 2:
        raise LangNeuronsError(f"{root}: fewer than two ids; the first is the few-shot example, add more rows")
    description = {"source": "file", "path": str(root.resolve()), "languages": sorted(texts), "segments": len(ids)}
    return ParallelData(texts, ids[1:], ids[:1], description)


def load_parallel(data: str | Path, languages: Sequence[str], split: str | None = None) -> ParallelData:
    """"udhr" (split all/train/heldout), "flores" (split devtest/dev) or a JSONL path (no split)."""
    if str(data) == "udhr":
        return udhr_parallel(languages, split or "all")
    if str(data) == "flores":
        return flores_parallel(languages, split or "devtest")
    if split is not None:
        raise LangNeuronsError("--split applies to udhr and flores only; a file is used whole")
    return local_parallel(data)


def flores_code(lang: str) -> str:
    """The FLORES+ config of a language code: mapped from ISO 639-1 via `LANGUAGES`, or given ("deu_Latn")."""
    if lang in LANGUAGES:
        return LANGUAGES[lang][1]
    if len(lang.split("_")) == 2 and len(lang.split("_")[1]) == 4:
        return lang
    raise LangNeuronsError(f"no FLORES+ code known for '{lang}'; pass its config name instead, e.g. deu_Latn")


def language_name(lang: str, names: Mapping[str, str] | None = None) -> str:
    """The English name used in prompts: from `names`, else `LANGUAGES` (by code or FLORES code)."""
    if names and lang in names:
        return names[lang]
    code = _BY_FLORES.get(lang, lang)
    if code in LANGUAGES:
        return LANGUAGES[code][0]
    raise LangNeuronsError(f"no language name known for '{lang}'; pass names={{'{lang}': 'Name'}} (--names)")


def translation_prompt(template: str, source_text: str, source: str, target: str,
                       examples: Sequence[tuple[str, str]] = (), names: Mapping[str, str] | None = None) -> str:
    """`template` filled for `source_text`, after each example filled and followed by " translation\\n\\n"."""
    if "{source}" not in template:
        raise LangNeuronsError(f"template {template!r} has no {{source}} field; put it where the source text goes")
    fields = {"src": source, "tgt": target, "src_name": language_name(source, names),
              "tgt_name": language_name(target, names)}
    try:
        shots = "".join(template.format(**fields, source=s) + " " + t + "\n\n" for s, t in examples)
        return shots + template.format(**fields, source=source_text)
    except (KeyError, IndexError, ValueError) as e:
        raise LangNeuronsError(f"template {template!r}: {e!r}; use the fields {{src_name}}, {{tgt_name}}, {{src}}, "
                               "{tgt} and {source} (double other braces)") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text("utf-8").splitlines()
    except UnicodeDecodeError:
        raise LangNeuronsError(f"{path}: not UTF-8 text; convert it to UTF-8") from None


# ----------------------------------------------------------------------------------------------------------
# The run


@dataclass
class TranslationResult:
    """The summary (as written to translation.json), the per-sample rows of this run's pairs, and the files."""

    summary: dict[str, Any]
    samples: list[dict[str, Any]]
    files: dict[str, Path]


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'en-de,en-fr' -> [("en", "de"), ("en", "fr")]."""
    pairs = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or not all(parts):
            raise LangNeuronsError(f"pair {item!r}: write source-target, e.g. en-de (or use --source/--targets)")
        pairs.append((parts[0], parts[1]))
    return pairs


def run_translation(
    model: Any,
    tokenizer: Any,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    pairs: Sequence[tuple[str, str]],
    data: ParallelData | str | Path = "udhr",
    output_dir: str | Path = "runs/translation",
    n: int | None = 30,
    steering: ForcingSetting | Mapping[str, ForcingSetting] | None = ACTIVATE,
    split: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    shots: int = 0,
    names: Mapping[str, str] | None = None,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    repetition_penalty: float = 1.0,
    identifier: str = "fasttext",
    fresh: bool = False,
    plot: bool = True,
    progress: bool = True,
    prompt_format: str = "auto",
) -> TranslationResult:
    """Translate the first `n` segments of each (source, target) pair unsteered and steered; score and save.

    `steering`: one setting for every target, or target -> setting (a calibration); None runs the baseline only.
    A setting with `top_rate` reruns LAPE on `stats` at that share. A prompt may generate twice its source's
    tokens plus 16, rounded up to a multiple of 32, and at most `max_new_tokens`. Rows go to
    `translation_samples.jsonl` as they are made; a rerun with the same settings skips them (`fresh` starts over).
    Writes `translation.json` (metadata and summary) and, with `plot`, `translation.png/.svg`. `prompt_format`:
    "auto" (the filled template as the user's message in the chat template, when the tokenizer has one), "chat"
    or "plain".
    """
    fmt = resolve_prompt_format(tokenizer, prompt_format)
    pairs = [tuple(p) for p in pairs]
    if not pairs or any(len(p) != 2 or p[0] == p[1] for p in pairs):
        raise LangNeuronsError("pairs must be (source, target) tuples of two different languages, e.g. [('en', 'de')]")
    if n is not None and n < 1:
        raise LangNeuronsError(f"n={n}; evaluate at least one segment per pair (or None for all)")
    if shots < 0 or max_new_tokens < 1:
        raise LangNeuronsError("shots must be >= 0 and max_new_tokens >= 1")
    languages = list(dict.fromkeys(lang for p in pairs for lang in p))
    if not isinstance(data, ParallelData):
        data = load_parallel(data, languages, split)
    plan = _plan(steering, [t for _, t in pairs])
    neuron_sets = _neuron_sets(plan, neurons, stats)
    lid = get_identifier(identifier)
    generation = generation_settings(max_new_tokens, STOP, batch_size, repetition_penalty, max_batch_tokens,
                                     prompt=prompt_settings(tokenizer, fmt))
    generation["max_new_tokens_rule"] = "2 * source tokens + 16, rounded up to a multiple of 32, at most max_new_tokens"
    settings = {
        "model": model_id(model), "model_fingerprint": model_meta(model), "prompt_format": fmt,
        "data": data.description, "template": template, "shots": shots,
        "names": dict(names or {}), "identifier": identifier,
        "steering": None if plan is None else {t: dataclasses.asdict(s) for t, s in plan.items()},
        "neurons": None if neurons is None else {"method": neurons.meta.get("method"),
                                                 "settings": neurons.meta.get("settings")},
        "generation": {k: v for k, v in generation.items() if k != "batch_size"},
    }
    out = Path(output_dir)
    log = SampleLog(out / "translation_samples.jsonl", ("pair", "setting", "id"), settings, fresh=fresh)
    jobs, wanted = [], []
    for source, target in pairs:
        segments = data.segments(source, target, n)
        if not segments:
            raise LangNeuronsError(f"no segments for {source}-{target} in the data; check the languages and split")
        examples = data.example_pairs(source, target, shots)
        config = _config(plan, neuron_sets, source, target)
        for seg, text, reference in segments:
            prompt = translation_prompt(template, text, source, target, examples, names)
            limit = _limit(tokenizer, text, max_new_tokens)
            for label, cfg in (("baseline", None), *((("steered", config),) if plan is not None else ())):
                row = {"pair": f"{source}-{target}", "setting": label, "id": seg}
                wanted.append(row)
                if row not in log:
                    rate = plan[target].top_rate if cfg is not None else None
                    jobs.append((row, source, target, text, reference, prompt, cfg, rate, limit))
    start = time.perf_counter()
    _generate_jobs(model, tokenizer, jobs, log, lid, neuron_sets, stats, batch_size, max_batch_tokens,
                   repetition_penalty, progress, fmt)
    seconds = time.perf_counter() - start
    samples = [log.get(row) for row in wanted]
    summary = _summary(samples, pairs, plan is not None)
    summary["generated"] = {"rows": len(jobs), "reused": len(wanted) - len(jobs), "seconds": round(seconds, 1)}
    meta = run_metadata(model, "translation", {**settings, "pairs": [f"{s}-{t}" for s, t in pairs], "n": n,
                                                "generation": generation})
    files = {"summary": write_results(out / "translation.json", meta, summary), "samples": log.path}
    if plot and is_main():
        files.update(zip(("png", "svg"), _bars(summary, out / "translation.png")))
    return TranslationResult(summary, samples, files)


def _plan(steering: ForcingSetting | Mapping[str, ForcingSetting] | None,
          targets: Sequence[str]) -> dict[str, ForcingSetting] | None:
    if steering is None:
        return None
    if isinstance(steering, ForcingSetting):
        return dict.fromkeys(targets, steering)
    missing = [t for t in targets if t not in steering]
    if missing:
        raise LangNeuronsError(f"no steering setting for target(s) {', '.join(missing)}; "
                               f"the settings cover {', '.join(steering)}")
    return {t: steering[t] for t in dict.fromkeys(targets)}


def _neuron_sets(plan: dict[str, ForcingSetting] | None, neurons: NeuronSet | None,
                 stats: ActivationStats | None) -> dict[float | None, NeuronSet | None]:
    """The neuron set of each share in the plan (None: the set given)."""
    sets: dict[float | None, NeuronSet | None] = {None: neurons}
    for setting in (plan or {}).values():
        if setting.top_rate not in sets:
            if stats is None:
                raise LangNeuronsError("a setting with top_rate needs statistics (--stats) to run LAPE")
            sets[setting.top_rate] = lape_at_share(stats, setting.top_rate)
    if plan is not None and any(s.top_rate is None for s in plan.values()) and neurons is None:
        raise LangNeuronsError("steering needs a neuron set (--neurons), a calibration (--calibrated) or --top-rate")
    return sets


def _config(plan: dict[str, ForcingSetting] | None, neuron_sets: dict[float | None, NeuronSet | None],
            source: str, target: str) -> SteeringConfig | None:
    """The steering of one pair: +target (and -source, if the setting says so and the source has neurons)."""
    if plan is None:
        return None
    setting = plan[target]
    chosen = neuron_sets[setting.top_rate]
    if setting.method != "residual" and (target not in chosen.languages or chosen.count(target) == 0):
        raise LangNeuronsError(f"the neuron set has no neurons for target '{target}'; "
                               "use a set that has (a larger top_rate) or leave the pair out")
    config = setting.config(source, target)
    if config.deactivate and (source not in chosen.languages or chosen.count(source) == 0):
        config.deactivate = {}  # the source has no neurons at this share: nothing to deactivate
    return config


def _limit(tokenizer: Any, text: str, cap: int) -> int:
    """New-token budget of one prompt: twice its source's tokens plus 16, in steps of 32, at most `cap`."""
    tokens = len(tokenizer(text, add_special_tokens=False).input_ids)
    return min(cap, 32 * math.ceil((2 * tokens + 16) / 32))


def _generate_jobs(model, tokenizer, jobs, log, lid, neuron_sets, stats, batch_size, max_batch_tokens,
                   repetition_penalty, progress, fmt) -> None:
    """Generate the missing rows in batches of equal (neuron set, token budget); log each batch as it finishes."""
    groups: dict[tuple[float | None, int], list[tuple]] = {}
    for job in jobs:
        groups.setdefault((job[7], job[8]), []).append(job)
    chunks = [(key, rows[i : i + batch_size]) for key, rows in sorted(groups.items(), key=lambda kv: (kv[0][1],
              str(kv[0][0]))) for i in range(0, len(rows), batch_size)]

    def run(job: tuple[tuple[float | None, int], list[tuple]]) -> list[str]:
        (rate, limit), chunk = job
        return generate(model, tokenizer, [j[5] for j in chunk], max_new_tokens=limit, batch_size=batch_size,
                        max_batch_tokens=max_batch_tokens,
                        stop_strings=STOP, steerings=[j[6] for j in chunk], neurons=neuron_sets[rate], stats=stats,
                        repetition_penalty=repetition_penalty, prompt_format=fmt)

    bar = tqdm(total=len(chunks), desc="translate", disable=not progress)
    # under torchrun: chunks split over ranks, every rank logs every row (rank 0 writes)
    for (_, chunk), texts in (pair for done in rounds(chunks, run) for pair in done):
        bar.update()
        found = lid.identify(texts)
        log.add([{
            **row, "source_lang": source, "target_lang": target, "steering": cfg.describe() if cfg else None,
            "source": text, "reference": reference, "output": output, "identified": ident.language,
            "confidence": round(ident.confidence, 4), "in_target": bool(output) and ident.language == _iso(target),
            "in_source": bool(output) and ident.language == _iso(source), "max_new_tokens": budget,
        } for (row, source, target, text, reference, _, cfg, _, budget), output, ident in zip(chunk, texts, found)])
    bar.close()


def _iso(lang: str) -> str:
    """The identifier's label for a language code (FLORES codes mapped back to ISO 639-1 where known)."""
    return _BY_FLORES.get(lang, lang)


def _summary(samples: list[dict[str, Any]], pairs: Sequence[tuple[str, str]], steered: bool) -> dict[str, Any]:
    """Per pair and setting: chrF, BLEU, shares of outputs in the target / source language and empty; deltas."""
    labels = SETTINGS if steered else SETTINGS[:1]
    per_pair: dict[str, Any] = {}
    for source, target in pairs:
        name = f"{source}-{target}"
        cell: dict[str, Any] = {"bleu_tokenize": bleu_tokenizer(target)}
        for label in labels:
            rows = [s for s in samples if s["pair"] == name and s["setting"] == label]
            scores = translation_scores([r["output"] for r in rows], [r["reference"] for r in rows], target)
            cell[label] = {
                "n": len(rows), "chrf": round(scores["chrf"].score, 2), "bleu": round(scores["bleu"].score, 2),
                "target_share": _share(rows, "in_target"), "source_share": _share(rows, "in_source"),
                "empty_share": round(sum(not r["output"] for r in rows) / len(rows), 4),
            }
            cell["signatures"] = {"chrf": scores["chrf"].signature, "bleu": scores["bleu"].signature}
        if steered:
            cell["delta"] = {k: round(cell["steered"][k] - cell["baseline"][k], 4)
                             for k in ("chrf", "bleu", "target_share", "source_share")}
        per_pair[name] = cell
    mean = {label: {k: round(sum(c[label][k] for c in per_pair.values()) / len(per_pair), 4)
                    for k in ("chrf", "bleu", "target_share", "source_share")} for label in labels}
    if steered:
        mean["delta"] = {k: round(mean["steered"][k] - mean["baseline"][k], 4) for k in mean["baseline"]}
    return {"pairs": per_pair, "mean": mean, "ids": {name: [s["id"] for s in samples if s["pair"] == name
                                                           and s["setting"] == "baseline"] for name in per_pair}}


def _share(rows: list[dict[str, Any]], key: str) -> float:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 4)


def _bars(summary: dict[str, Any], path: Path) -> list[Path]:
    """chrF and target-language share per pair, one bar per setting."""
    import matplotlib.pyplot as plt
    import numpy as np

    from langneurons.figures.charts import _save

    names = list(summary["pairs"])
    labels = [label for label in SETTINGS if label in summary["mean"]]
    x, width = np.arange(len(names)), 0.8 / len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.4 * len(names) + 3), 3.6))
    for ax, key, title in zip(axes, ("chrf", "target_share"), ("chrF", "outputs in the target language")):
        for i, label in enumerate(labels):
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, [summary["pairs"][p][label][key] for p in names],
                   width, label=label)
        ax.set_xticks(x, names)
        ax.set_title(title)
    axes[1].set_ylim(0, 1)
    axes[0].legend()
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------------------
# Command line


