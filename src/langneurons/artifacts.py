"""Artifacts on disk: safetensors with the JSON metadata in the header, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from langneurons.errors import LangNeuronsError

META_KEY = "langneurons"


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        normal_mode(tmp)  # mkstemp (and some writers) make it private
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def normal_mode(path: str | Path) -> None:
    """Give a file the mode a new file normally gets (0666 less the umask): some writers make files private."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` and move the result into place; no partial file is ever left at `path`."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (UTF-8, indented)."""
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8"))


def read_json(path: str | Path, kind: str, missing: str = "check the path") -> dict[str, Any]:
    """Read a JSON artifact written with `"kind": kind`; `missing` says what to do if the file is absent."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise LangNeuronsError(f"{path}: no such file; {missing}") from None
    except json.JSONDecodeError as e:
        raise LangNeuronsError(f"{path}: not JSON ({e.msg}); re-create it") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise LangNeuronsError(f"{path}: not a {kind} file")
    return data


def save_tensors(path: str | Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save tensors with `meta` (plus kind, library version and date) as JSON in the safetensors header,
    atomically."""
    from langneurons import __version__

    meta = {**meta, "kind": kind, "library_version": __version__}
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(meta, ensure_ascii=False)}
    write_atomic(path, lambda p: save_file(contiguous, str(p), metadata=header))


def read_meta(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The metadata of a langneurons artifact (of `kind`, if given) without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise LangNeuronsError(f"{path}: no such file; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for a damaged file
        raise LangNeuronsError(f"{path}: not a readable safetensors file ({e}); re-create it") from None
    if META_KEY not in header:
        raise LangNeuronsError(f"{path}: not a langneurons artifact (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise LangNeuronsError(f"{path}: its metadata is damaged; re-create the file") from None
    if kind is not None and meta.get("kind") != kind:
        raise LangNeuronsError(f"{path}: holds '{meta.get('kind')}', expected '{kind}'")
    return meta


def load_tensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a langneurons safetensors file of the given `kind` ("stats", "neurons", ...)."""
    meta = read_meta(path, kind)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as e:
        raise LangNeuronsError(f"{path}: its tensors are damaged ({e}); re-create the file") from None
    return tensors, meta
