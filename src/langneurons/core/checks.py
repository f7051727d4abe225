"""Checks made before any expensive work: output paths that can be written and lose nothing, finite numbers,
and windows the model can take."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from langneurons.core.errors import LangNeuronsError

POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len", "seq_length")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _writable_folder(path: Path, option: str) -> None:
    """Fail unless files can be created in `path` or, where it does not exist yet, in its nearest ancestor."""
    folder = path
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise LangNeuronsError(f"{option} {path}: {folder} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".langneurons-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LangNeuronsError(f"{option} {path}: cannot write in {folder} ({e.strerror}); choose another path") \
            from None


def check_output(path: str | Path, inputs: Iterable[str | Path | None] = (), kind: str | None = None,
                 option: str = "--output", folder: bool = False) -> None:
    """Fail before any work unless `path` can be written and writing it loses nothing.

    A file output must not be a folder, nor one of `inputs`, and an existing file there must be an artifact of the
    same `kind` (when given). A `folder` output must not be a file. The folder it goes in must be writable.
    """
    from langneurons.core.artifacts import artifact_kind

    path = Path(path)
    for source in inputs:
        if source is not None and _same(path, Path(source)):
            raise LangNeuronsError(f"{option} {path} is also an input; write the result to another file")
    if folder:
        if path.exists() and not path.is_dir():
            raise LangNeuronsError(f"{option} {path} is a file, not a folder; choose a folder")
        _writable_folder(path, option)
        return
    if path.is_dir():
        raise LangNeuronsError(f"{option} {path} is a folder; give a file name, e.g. {path / 'out'}")
    _writable_folder(path.parent, option)
    if kind is not None and path.exists():
        found = artifact_kind(path)
        if found != kind:
            holds = f"a '{found}' artifact" if found else "a file that is not a langneurons artifact"
            raise LangNeuronsError(f"{option} {path} exists and holds {holds}, not '{kind}'; "
                                   "choose another output path or remove that file")


def check_finite(name: str, value: Any) -> None:
    """Fail on NaN or an infinite number (they would give empty or meaningless results)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise LangNeuronsError(f"{name}={value}: give a finite number")


def position_limit(model: Any) -> int | None:
    """The longest sequence the model's config allows (None if it states none)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    values = [getattr(config, name, None) for name in POSITION_FIELDS]
    limits = [v for v in values if isinstance(v, int) and v > 0]
    return min(limits) if limits else None


def check_window(model: Any, window: int | None, option: str = "window") -> None:
    """Fail unless windows of `window` tokens fit the model's position limit."""
    limit = position_limit(model)
    if window is not None and limit is not None and window > limit:
        raise LangNeuronsError(f"{option}={window} is longer than the model's {limit} positions; "
                               f"use a window of at most {limit}")


def check_model_folder(folder: Path) -> None:
    """Fail clearly unless `folder` looks like a Hugging Face model folder (it has a config.json)."""
    if (folder / "config.json").is_file():
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".pkl", ".pickle", ".bin", ".pt", ".pth"))
    holds = f" (it holds {', '.join(pickles[:3])}: a pickle alone is not a model folder)" if pickles else ""
    raise LangNeuronsError(f"{folder}: no config.json{holds}; pass a Hugging Face model folder (config.json and "
                           "*.safetensors, e.g. from save_pretrained), a .gguf file or a hub id")
