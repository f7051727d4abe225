"""A corpus from a Hugging Face dataset (needs `datasets`: pip install 'langneurons[hf]'), streamed per language."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from typing import Any

from langneurons.core.errors import LangNeuronsError
from langneurons.data.corpus import Corpus, check_languages


def hf_dataset(
    name: str,
    languages: Sequence[str],
    config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    streaming: bool = True,
    data_files: str | None = None,
    heldout_every: int = 10,
    **load_kwargs: Any,
) -> Corpus:
    """A corpus from a Hugging Face dataset, one load per language; "{lang}" in `config` / `data_files`
    is replaced by the language code, e.g. hf_dataset("uonlp/CulturaX", ["en", "de"], config="{lang}")."""
    try:
        import datasets
    except ImportError:
        raise LangNeuronsError("hf_dataset needs `datasets`; pip install 'langneurons[hf]'") from None
    check_languages(languages)
    per_language = {
        lang: {"config": _fill(config, lang), "data_files": _fill(data_files, lang)} for lang in languages
    }
    sources = {
        lang: functools.partial(
            _read_hf, name, split, text_column, streaming, load_kwargs, **per_language[lang]
        )
        for lang in languages
    }
    shown = {k: v for k, v in load_kwargs.items() if k not in ("token", "use_auth_token")}  # no secrets
    description = {
        "kind": "hf_dataset", "name": name, "split": split, "text_column": text_column,
        "streaming": streaming, "load_kwargs": json.loads(json.dumps(shown, default=str)),
        "datasets_version": datasets.__version__, "per_language": per_language,
    }
    return Corpus(sources, description, heldout_every)


def _fill(template: str | None, lang: str) -> str | None:
    """`template` with "{lang}" replaced by `lang` (other braces, such as globs, are kept)."""
    return None if template is None else template.replace("{lang}", lang)


def _read_hf(
    name: str, split: str, text_column: str, streaming: bool, load_kwargs: dict[str, Any],
    config: str | None, data_files: str | None,
) -> Iterator[str]:
    """Stream the `text_column` of one language's dataset."""
    import datasets

    try:
        rows = datasets.load_dataset(
            name, config, split=split, streaming=streaming, data_files=data_files, **load_kwargs
        )
    except Exception as e:  # datasets raises many types for a bad name, config, split or missing files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LangNeuronsError(
            f"could not load dataset {name!r} (config={config!r}, split={split!r}, "
            f"data_files={data_files!r}): {reason}; check these arguments and your connection"
        ) from None
    for row in rows:
        if text_column not in row:
            raise LangNeuronsError(
                f"dataset {name!r} has no column {text_column!r} (columns: {', '.join(row)}); "
                "pass text_column=<one of them>"
            )
        yield row[text_column]
