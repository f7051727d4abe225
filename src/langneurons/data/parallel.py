"""Parallel data for translation: segments aligned across languages by id, and the prompts that ask for a translation.

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
examples (`translation_prompt`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langneurons.core.errors import LangNeuronsError
from langneurons.data.files import read_lines
from langneurons.data.udhr import udhr, udhr_articles

DEFAULT_TEMPLATE = "Translate from {src_name} to {tgt_name}.\n{src_name}: {source}\n{tgt_name}:"
FLORES = "openlanguagedata/flores_plus"

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
BY_FLORES = {flores: code for code, (_, flores) in LANGUAGES.items()}  # FLORES+ config -> code


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
        for number, line in enumerate(read_lines(file), 1):
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
    code = BY_FLORES.get(lang, lang)
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


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'en-de,en-fr' -> [("en", "de"), ("en", "fr")]."""
    pairs = []
    for item in text.split(","):
        parts = item.strip().split("-")
        if len(parts) != 2 or not all(parts):
            raise LangNeuronsError(f"pair {item!r}: write source-target, e.g. en-de (or use --source/--targets)")
        pairs.append((parts[0], parts[1]))
    return pairs


def _one_line(text: str) -> str:
    """`text` on one line: every run of whitespace, line breaks included, becomes one space."""
    return " ".join(text.split())


