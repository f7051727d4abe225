"""Artifacts on disk: safetensors with the JSON metadata in the header, written atomically."""

from __future__ import annotations

import glob
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langneurons.core.errors import LangNeuronsError

if TYPE_CHECKING:
    import torch

META_KEY = "langneurons"
_STALE_S = 3600  # a temporary file without a writer id, older than this, belongs to a killed writer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete `.NAME.PID.XXXX.tmp` files beside `path` left by writers that were killed (their process is gone, or
    the file has no writer id and is over an hour old); returns the files removed."""
    path = Path(path)
    removed = []
    for name in glob.glob(glob.escape(str(path.parent / f".{path.name}.")) + "*.tmp"):
        tmp = Path(name)
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        with suppress(OSError):
            stale = (not _alive(int(pid))) if pid.isdigit() else time.time() - tmp.stat().st_mtime > _STALE_S
            if stale and tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds. Temporary files of
    earlier writers of `path` that were killed are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
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


def write_atomic(path: str | Path, writer: Callable[[Path], object]) -> None:
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
    from safetensors.torch import save_file

    from langneurons.core.version import __version__

    meta = {**meta, "kind": kind, "library_version": __version__}
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(meta, ensure_ascii=False)}
    write_atomic(path, lambda p: save_file(contiguous, str(p), metadata=header))


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (read directly: no tensor library needed)."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > 100_000_000 or size > path.stat().st_size - 8:
                raise ValueError("header length past the end of the file")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as e:
        raise LangNeuronsError(f"{path}: not a readable safetensors file ({e}); re-create it") from None
    if not isinstance(header, dict):
        raise LangNeuronsError(f"{path}: not a readable safetensors file (its header is not an object); re-create it")
    return header


def read_meta(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The metadata of a langneurons artifact (of `kind`, if given) without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise LangNeuronsError(f"{path}: no such file; check the path")
    header = _safetensors_header(path).get("__metadata__") or {}
    if not isinstance(header, dict) or META_KEY not in header:
        raise LangNeuronsError(f"{path}: not a langneurons artifact (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(header[META_KEY])
    except (TypeError, json.JSONDecodeError):
        raise LangNeuronsError(f"{path}: its metadata is damaged; re-create the file") from None
    if not isinstance(meta, dict):
        raise LangNeuronsError(f"{path}: its metadata is {type(meta).__name__}, not an object; re-create the file")
    if kind is not None and meta.get("kind") != kind:
        raise LangNeuronsError(f"{path}: holds '{meta.get('kind')}', expected '{kind}'")
    return meta


def load_tensors(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a langneurons safetensors file of the given `kind` ("stats", "neurons", ...)."""
    from safetensors import safe_open

    meta = read_meta(path, kind)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
    except Exception as e:
        raise LangNeuronsError(f"{path}: its tensors are damaged ({e}); re-create the file") from None
    return tensors, meta


def artifact_kind(path: str | Path) -> str | None:
    """The `kind` of the langneurons artifact at `path` (safetensors or JSON), or None if it is not one."""
    path = Path(path)
    if path.suffix == ".safetensors":
        with suppress(LangNeuronsError):
            return read_meta(path).get("kind")
        return None
    with suppress(OSError, ValueError):
        data = json.loads(path.read_text("utf-8"))
        return data.get("kind") if isinstance(data, dict) else None
    return None
