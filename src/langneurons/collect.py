"""Collect activation statistics: one pass of the decoder body over packed windows, hooks at the neuron sites.

Streaming (memory does not grow with the corpus), batched, sharded over processes (`torchrun`: each rank takes
every world-th window and the sums are all-reduced), and resumable from a checkpoint file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from langneurons.artifacts import load_tensors
from langneurons.corpus import Corpus, pack_windows, window_prefix
from langneurons.errors import LangNeuronsError
from langneurons.models import model_id, model_revision
from langneurons.sites import NeuronSites, find_sites
from langneurons.stats import KIND, ActivationStats, empty_stats


class _StopForward(Exception):
    """Raised by the last layer's hook: nothing after the last neuron site is needed."""


class StatsRecorder:
    """Forward hooks that add each layer's neuron statistics into per-layer float accumulators.

    Per layer: count of `a > 0`, sum of `a`, sum of `a * a` over all positions except the first `skip` (BOS)
    of each window; float32 within a window (counts exact below 2**24 tokens), float64 across windows. With
    `hidden`, also the sum of each decoder layer's output (the residual stream), for residual steering.
    """

    def __init__(self, sites: NeuronSites, skip: int, track_sq: bool = True, hidden: bool = False,
                 stop_after_last: bool = True):
        self.sites, self.skip, self.track_sq, self.hidden = sites, skip, track_sq, hidden
        self.stop_after_last = stop_after_last
        self.acc: dict[tuple[str, int], torch.Tensor] = {}  # (kind, layer) -> float64 sums on the layer's device
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.input_shape: tuple[int, int] = (0, 0)

    def _window_sums(self, output: torch.Tensor | tuple) -> torch.Tensor:
        """[batch, seq, width] (or OPT's [batch * seq, width]) -> per-window sums without the BOS positions."""
        a = (output[0] if isinstance(output, tuple) else output).detach()
        if a.dim() == 2:
            a = a.view(*self.input_shape, -1)
        return a[:, self.skip :]

    def _add(self, key: tuple[str, int], batch: torch.Tensor) -> None:
        # Per-window float32 sums, then float64 across windows: a window's sums do not depend on which
        # windows share its batch, so sharded and single-process runs agree to float64 rounding.
        total = batch.double().sum(0)
        acc = self.acc.get(key)
        self.acc[key] = total if acc is None else acc.add_(total)

    def _neuron_hook(self, layer: int):
        stop = self.stop_after_last and not self.hidden and layer == self.sites.n_layers - 1

        def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            x = self._window_sums(output)
            fired = torch.relu(x).sign_().sum(1)
            sq = (x * x).sum(1) if self.track_sq else torch.zeros_like(fired)
            self._add(("neurons", layer), torch.stack([fired, x.sum(1), sq], dim=-2))
            if stop:
                raise _StopForward

        return hook

    def _hidden_hook(self, layer: int):
        stop = self.stop_after_last and layer == self.sites.n_layers - 1

        def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor | tuple) -> None:
            self._add(("hidden", layer), self._window_sums(output).sum(1)[:, None])
            if stop:
                raise _StopForward

        return hook

    def __enter__(self) -> StatsRecorder:
        self._handles = [act.register_forward_hook(self._neuron_hook(i)) for i, act in enumerate(self.sites.acts)]
        if self.hidden:
            self._handles += [m.register_forward_hook(self._hidden_hook(i)) for i, m in enumerate(self.sites.layers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @torch.inference_mode()
    def run(self, model: torch.nn.Module, input_ids: torch.Tensor) -> None:
        """Forward `input_ids` [batch, seq] through the decoder body only (no LM head), recording statistics;
        the pass stops after the last site it needs."""
        self.input_shape = tuple(input_ids.shape)  # type: ignore[assignment]
        with contextlib.suppress(_StopForward):
            model.base_model(input_ids=input_ids, use_cache=False)

    def take(self) -> dict[str, torch.Tensor]:
        """The sums so far on the CPU, by ActivationStats field name ([L, N], hidden [L, H]); resets them."""
        n_layers, n = self.sites.n_layers, self.sites.n_neurons
        zero = torch.zeros(3, n, dtype=torch.float64)
        neurons = torch.stack([self.acc.get(("neurons", i), zero).cpu() for i in range(n_layers)])
        out = {"over_zero": neurons[:, 0].round().long(), "sum": neurons[:, 1].contiguous()}
        if self.track_sq:
            out["sum_sq"] = neurons[:, 2].contiguous()
        if self.hidden:
            out["hidden_sum"] = torch.stack([self.acc[("hidden", i)].cpu()[0] for i in range(n_layers)]) \
                if ("hidden", 0) in self.acc else None
        self.acc = {}
        return {k: v for k, v in out.items() if v is not None}


def _batches(windows: Iterator[torch.Tensor], batch_size: int) -> Iterator[list[tuple[int, torch.Tensor]]]:
    """Group (global index, window) pairs into batches of equal length."""
    batch: list[tuple[int, torch.Tensor]] = []
    for item in enumerate(windows):
        if batch and (len(batch) == batch_size or len(item[1]) != len(batch[0][1])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _shard() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce(tensors: tuple[torch.Tensor, ...]) -> None:
    if _shard()[1] > 1:
        for t in tensors:
            dist.all_reduce(t)


def collect_stats(
    model: torch.nn.Module,
    tokenizer: Any,
    corpus: Corpus,
    max_tokens: int | None = 100_000,
    window: int = 512,
    batch_size: int = 4,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 64,
    track_sq: bool = True,
    hidden: bool = False,
    split: str = "train",
    progress: bool = True,
) -> ActivationStats:
    """Activation statistics of `model` over the `split` documents of each language of `corpus`.

    Windows of `window` tokens (BOS first, BOS left out of the statistics), at most `max_tokens` tokens per
    language. With `checkpoint`, progress is saved there after each language and every `checkpoint_every`
    windows, and a rerun with the same arguments resumes. Under torchrun each rank takes every world-th window
    and all ranks return the summed statistics (rank 0 writes the checkpoint). `hidden` also records the mean
    output of each decoder layer (needed by residual DiffMean steering).
    """
    if not corpus.languages:
        raise LangNeuronsError("the corpus has no languages; give at least one")
    if max_tokens is not None and max_tokens <= 0:
        raise LangNeuronsError(f"max_tokens must be positive, got {max_tokens}")
    if batch_size <= 0 or checkpoint_every <= 0:
        raise LangNeuronsError("batch_size and checkpoint_every must be positive")
    sites = find_sites(model)
    prefix = window_prefix(tokenizer)
    rank, world = _shard()
    device = model.get_input_embeddings().weight.device
    settings = {"window": window, "max_tokens": max_tokens, "split": split, "bos_skipped": len(prefix),
                "track_sq": track_sq, "hidden": hidden}
    meta = {
        "model": {"id": model_id(model), "revision": model_revision(model)},
        "site": sites.describe(),
        "corpus": corpus.describe(),
        "collection": {**settings, "batch_size": batch_size, "world_size": world},
    }
    hidden_size = model.get_input_embeddings().weight.shape[1] if hidden else None
    stats = empty_stats(corpus.languages, sites.n_layers, sites.n_neurons, meta, hidden_size)
    if not track_sq:
        stats.sum_sq = None
    # Every rank restores the checkpoint; only new sums are all-reduced, so restored rows count once.
    done, resume_lang, resume_windows = _resume(checkpoint, stats, settings) if checkpoint else ([], None, 0)
    group = batch_size * world  # windows of one step: each rank takes every world-th
    step = group * max(1, checkpoint_every // group)

    with StatsRecorder(sites, skip=len(prefix), track_sq=track_sq, hidden=hidden) as rec:
        for k, lang in enumerate(corpus.languages):
            if lang in done:
                continue
            skip_below = resume_windows if lang == resume_lang else 0
            windows, bar = language_windows(tokenizer, corpus, lang, split, window, max_tokens,
                                             f"collect {lang}", progress and rank == 0)
            n_local, seen = 0, 0
            for batch in _batches(windows, group):
                seen = batch[-1][0] + 1
                mine = [w for i, w in batch if i >= skip_below and i % world == rank]
                if mine:
                    rec.run(model, torch.stack(mine).to(device))
                    n_local += sum(len(w) - len(prefix) for w in mine)
                bar.update(sum(len(w) - len(prefix) for _, w in batch))
                if checkpoint and seen % step == 0:
                    _flush(rec, stats, k, n_local)
                    n_local = 0
                    if rank == 0:
                        _save(stats, checkpoint, done, partial=(lang, seen))
            _close(bar, lang, max_tokens)
            _flush(rec, stats, k, n_local)
            if stats.n_tokens[k] == 0:
                raise LangNeuronsError(f"no text for language '{lang}' in the {split} split; check the corpus")
            done.append(lang)
            if checkpoint and rank == 0:
                _save(stats, checkpoint, done, partial=None)
            resume_lang = None
    stats.meta["n_tokens"] = dict(zip(stats.languages, stats.n_tokens.tolist()))
    if checkpoint and rank == 0:
        stats.save(checkpoint)
    return stats


def language_windows(tokenizer: Any, corpus: Corpus, lang: str, split: str, window: int, max_tokens: int | None,
                     desc: str, progress: bool) -> tuple[Iterable[torch.Tensor], tqdm]:
    """The windows of one language and a token progress bar whose total is reached: text from memory or local files
    is tokenized up front (once), so the total is what it holds up to `max_tokens` and a budget it cannot fill is
    said at once; a streamed corpus (hub) counts to `max_tokens` and says so if the stream ends early."""
    windows: Iterable[torch.Tensor] = pack_windows(tokenizer, corpus.documents(lang, split), window, max_tokens)
    total = max_tokens
    if corpus.description.get("kind") in ("udhr", "texts", "text_files"):
        windows = list(windows)
        skip = len(window_prefix(tokenizer))
        total = sum(len(w) - skip for w in windows)
        if progress and max_tokens is not None and total < max_tokens:
            tqdm.write(f"{desc}: the {split} text holds {total} tokens, fewer than max_tokens={max_tokens}; "
                       "collecting all of it")
    return windows, tqdm(total=total, desc=desc, unit="tok", disable=not progress)


def _close(bar: tqdm, lang: str, max_tokens: int | None) -> None:
    """Close a language's bar; a stream that ended before the budget gets its real total and a message."""
    if bar.total is not None and bar.n < bar.total:
        if not bar.disable:
            tqdm.write(f"{lang}: the corpus ran out after {bar.n} tokens, fewer than max_tokens={max_tokens}")
        bar.total = bar.n
        bar.refresh()
    bar.close()


def _flush(rec: StatsRecorder, stats: ActivationStats, k: int, n_local: int) -> None:
    """Move the recorder's sums (all-reduced over ranks) into row `k` of `stats`."""
    sums = {**rec.take(), "n_tokens": torch.tensor(n_local, dtype=torch.long)}
    _all_reduce(tuple(sums.values()))
    rows = stats.tensors()
    for name, value in sums.items():
        rows[name][k] += value


def _save(stats: Any, path: str | Path, done: list[str], partial: tuple[str, int] | None) -> None:
    """Write a checkpoint of per-language sums (`ActivationStats` or `RelevanceStats`), marked incomplete."""
    meta = {**stats.meta, "incomplete": {"done": list(done), "partial": list(partial) if partial else None}}
    type(stats).from_tensors(stats.languages, stats.tensors(), meta).save(path)


def _resume(
    path: str | Path, stats: Any, settings: dict[str, Any], kind: str = KIND
) -> tuple[list[str], str | None, int]:
    """Restore rows from a checkpoint (of artifact `kind`) into `stats`; returns (languages done, partial language,
    its windows)."""
    path = Path(path)
    if not path.exists():
        return [], None, 0
    tensors, meta = load_tensors(path, kind)
    if meta.get("model", {}).get("id") != stats.model_id or meta.get("site") != stats.meta["site"]:
        raise LangNeuronsError(f"{path}: a checkpoint of another model; remove it or choose another output path")
    old = {k: meta.get("collection", {}).get(k) for k in settings}
    if old != settings or _source(meta.get("corpus", {})) != _source(stats.meta["corpus"]):
        raise LangNeuronsError(
            f"{path}: a checkpoint made with other settings or text ({old}); remove it or use the same settings"
        )
    state = meta.get("incomplete") or {"done": meta["languages"], "partial": None}
    partial = state["partial"]
    rows = stats.tensors()
    for lang in [*state["done"], *([partial[0]] if partial else [])]:
        if lang in stats.languages:
            src, dst = meta["languages"].index(lang), stats.languages.index(lang)
            for name, tensor in rows.items():
                tensor[dst] = tensors[name][src]
    done = [lang for lang in state["done"] if lang in stats.languages]
    return done, (partial[0] if partial else None), (int(partial[1]) if partial else 0)


def _source(corpus: dict[str, Any]) -> dict[str, Any]:
    """A corpus description without its language list: what must match for a checkpoint to be resumed."""
    return {k: v for k, v in corpus.items() if k not in ("languages", "udhr_codes")}
