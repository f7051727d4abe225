"""Collect activation statistics: one pass of the decoder body over packed windows, hooks at the neuron sites.

`run_collection` is the loop every per-language collection shares (activation statistics here, relevance in
`identify.relevance`): it takes a recorder and zero sums. Streaming (memory does not grow with the corpus),
batched, sharded over processes (`torchrun`: each rank takes every world-th window and the sums are
all-reduced), and resumable from a checkpoint file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from langneurons.core.artifacts import load_tensors, read_meta
from langneurons.core.checks import check_window
from langneurons.core.distributed import all_reduce_sum, rank_world
from langneurons.core.errors import LangNeuronsError, LangNeuronsWarning, warn
from langneurons.core.hooks import Hooks
from langneurons.core.lm import decoder_body, embedding_weight
from langneurons.core.models import model_placement
from langneurons.core.provenance import model_meta
from langneurons.core.sites import NeuronSites, find_sites
from langneurons.data.corpus import Corpus
from langneurons.data.windows import describe_start, pack_windows, window_prefix
from langneurons.stats.activation import KIND, ActivationStats, empty_stats
from langneurons.stats.sums import LanguageSums

if TYPE_CHECKING:
    from transformers import PreTrainedModel

S = TypeVar("S", bound=LanguageSums)


class StatsRecorder:
    """Hooks that add each layer's neuron statistics into per-layer float accumulators.

    Per layer: count of `a > 0`, sum of `a`, sum of `a * a` over all positions except the first `skip` (BOS)
    of each window. Whatever the model's dtype, the activations are widened to float32 before anything is
    computed (so a bf16/fp16 `a * a` is exact and cannot overflow, and counts are exact below 2**24 tokens a
    window), summed over each window in float32 and across windows in float64. With `hidden`, also the sum of
    each decoder layer's output (the residual stream), for residual steering, by the same rule.
    """

    def __init__(self, sites: NeuronSites, skip: int, track_sq: bool = True, hidden: bool = False,
                 stop_after_last: bool = True):
        self.sites, self.skip, self.track_sq, self.hidden = sites, skip, track_sq, hidden
        self.stop_after_last = stop_after_last
        self.acc: dict[tuple[str, int], torch.Tensor] = {}  # (kind, layer) -> float64 sums on the layer's device
        self._hooks: Hooks | None = None

    def _add(self, key: tuple[str, int], batch: torch.Tensor) -> None:
        # Per-window float32 sums, then float64 across windows: a window's sums do not depend on which
        # windows share its batch, so sharded and single-process runs agree to float64 rounding.
        total = batch.double().sum(0)
        acc = self.acc.get(key)
        self.acc[key] = total if acc is None else acc.add_(total)

    def _neuron_hook(self, layer: int):
        def hook(a: torch.Tensor) -> None:
            x = a.detach()[:, self.skip :].float()
            fired = torch.relu(x).sign_().sum(1)
            sq = (x * x).sum(1) if self.track_sq else torch.zeros_like(fired)
            self._add(("neurons", layer), torch.stack([fired, x.sum(1), sq], dim=-2))

        return hook

    def _hidden_hook(self, layer: int):
        def hook(h: torch.Tensor) -> None:
            self._add(("hidden", layer), h.detach()[:, self.skip :].float().sum(1)[:, None])

        return hook

    def __enter__(self) -> StatsRecorder:
        hooks = self._hooks = Hooks(self.sites)
        last = self.sites.n_layers - 1
        for i, act in enumerate(self.sites.acts):
            hooks.read(act, self._neuron_hook(i), stop=self.stop_after_last and not self.hidden and i == last)
        if self.hidden:
            for i, layer in enumerate(self.sites.layers):
                hooks.read(layer, self._hidden_hook(i), stop=self.stop_after_last and i == last)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None

    @torch.inference_mode()
    def run(self, model: PreTrainedModel, input_ids: torch.Tensor) -> int:
        """Forward `input_ids` [batch, seq] through the decoder body only (no LM head), recording statistics;
        the pass stops after the last site it needs. Returns the number of positions recorded."""
        Hooks.run(decoder_body(model), input_ids=input_ids, use_cache=False)
        return input_ids.shape[0] * max(0, input_ids.shape[1] - self.skip)

    def take(self) -> dict[str, torch.Tensor]:
        """The sums so far on the CPU, by ActivationStats field name ([L, N], hidden [L, H]); resets them."""
        n_layers, n = self.sites.n_layers, self.sites.n_neurons
        zero = torch.zeros(3, n, dtype=torch.float64)
        neurons = torch.stack([self.acc.get(("neurons", i), zero).cpu() for i in range(n_layers)])
        out = {"over_zero": neurons[:, 0].round().long(), "sum": neurons[:, 1].contiguous()}
        if self.track_sq:
            out["sum_sq"] = neurons[:, 2].contiguous()
        if self.hidden and ("hidden", 0) in self.acc:
            out["hidden_sum"] = torch.stack([self.acc[("hidden", i)].cpu()[0] for i in range(n_layers)])
        self.acc = {}
        return out


def _batches(windows: Iterable[torch.Tensor], batch_size: int) -> Iterator[list[tuple[int, torch.Tensor]]]:
    """Group (global index, window) pairs into batches of equal length."""
    batch: list[tuple[int, torch.Tensor]] = []
    for item in enumerate(windows):
        if batch and (len(batch) == batch_size or len(item[1]) != len(batch[0][1])):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


class Recorder(Protocol):
    """What the collection loop drives: hooks open while in a `with` block, `run` records one batch of windows and
    returns how many tokens it counted, `take` hands over (and resets) the sums by field name."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> Any: ...

    def run(self, model: PreTrainedModel, input_ids: torch.Tensor) -> int: ...

    def take(self) -> dict[str, torch.Tensor]: ...


def check_collection(corpus: Corpus, max_tokens: int | None, batch_size: int, checkpoint_every: int) -> None:
    """Raise on arguments no collection can run with."""
    if not corpus.languages:
        raise LangNeuronsError("the corpus has no languages; give at least one")
    if max_tokens is not None and max_tokens <= 0:
        raise LangNeuronsError(f"max_tokens must be positive, got {max_tokens}")
    if batch_size <= 0 or checkpoint_every <= 0:
        raise LangNeuronsError("batch_size and checkpoint_every must be positive")


def collection_meta(model: PreTrainedModel, sites: NeuronSites, corpus: Corpus, settings: dict[str, Any],
                    batch_size: int, **notes: Any) -> dict[str, Any]:
    """The metadata of collected sums: model, neuron site, corpus, and the collection's settings and `notes`."""
    return {
        "model": model_meta(model),
        "site": sites.describe(),
        "corpus": corpus.describe(),
        "collection": {**settings, "batch_size": batch_size, "world_size": rank_world()[1], **model_placement(model),
                       **notes},
    }


def run_collection(model: PreTrainedModel, tokenizer: Any, corpus: Corpus, recorder: Recorder, sums: S,
                   settings: dict[str, Any], *, batch_size: int, checkpoint: str | Path | None,
                   checkpoint_every: int, progress: bool, desc: str) -> S:
    """The collection loop: pack each language's `settings["split"]` documents into windows of
    `settings["window"]` tokens (at most `settings["max_tokens"]`), run them through `recorder` in batches, and
    add its sums into that language's row of `sums` (zero sums with their metadata).

    With `checkpoint`, progress is saved there after each language and every `checkpoint_every` windows, and a
    rerun with the same `settings` resumes. Under torchrun each rank takes every world-th window and all ranks
    return the summed sums (rank 0 writes the checkpoint).
    """
    window, max_tokens, split = settings["window"], settings["max_tokens"], settings["split"]
    skip = len(window_prefix(tokenizer))
    rank, world = rank_world()
    device = embedding_weight(model).device
    # Every rank restores the checkpoint; only new sums are all-reduced, so restored rows count once.
    done, resume_lang, resume_windows = _resume(checkpoint, sums, settings) if checkpoint else ([], None, 0)
    group = batch_size * world  # windows of one step: each rank takes every world-th
    step = group * max(1, checkpoint_every // group)

    with recorder:
        for k, lang in enumerate(corpus.languages):
            if lang in done:
                continue
            skip_below = resume_windows if lang == resume_lang else 0
            windows, bar = language_windows(tokenizer, corpus, lang, split, window, max_tokens, f"{desc} {lang}",
                                            progress and rank == 0)
            n_local, seen = 0, 0
            for batch in _batches(windows, group):
                seen = batch[-1][0] + 1
                mine = [w for i, w in batch if i >= skip_below and i % world == rank]
                if mine:
                    n_local += recorder.run(model, torch.stack(mine).to(device))
                bar.update(sum(len(w) - skip for _, w in batch))  # resumed windows count towards the total too
                if checkpoint and seen % step == 0:
                    _flush(recorder, sums, k, n_local)
                    n_local = 0
                    if rank == 0:
                        _save(sums, checkpoint, done, partial=(lang, seen))
            _close(bar)
            _flush(recorder, sums, k, n_local)
            if sums.n_tokens[k] == 0:
                raise LangNeuronsError(f"no text for language '{lang}' in the {split} split; check the corpus")
            if rank == 0:
                warn_short(lang, int(sums.n_tokens[k]), max_tokens)
            done.append(lang)
            if checkpoint and rank == 0:
                _save(sums, checkpoint, done, partial=None)
            resume_lang = None
    sums.meta["n_tokens"] = dict(zip(sums.languages, sums.n_tokens.tolist()))
    if checkpoint and rank == 0:
        sums.save(checkpoint)
    return sums


def collect_stats(
    model: PreTrainedModel,
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
    check_collection(corpus, max_tokens, batch_size, checkpoint_every)
    check_window(model, window)
    sites = find_sites(model)
    skip = len(window_prefix(tokenizer))
    settings = {"window": window, "max_tokens": max_tokens, "split": split, "bos_skipped": skip,
                "track_sq": track_sq, "hidden": hidden}
    hidden_size = embedding_weight(model).shape[1] if hidden else None
    stats = empty_stats(corpus.languages, sites.n_layers, sites.n_neurons,
                        collection_meta(model, sites, corpus, settings, batch_size, start=describe_start(tokenizer)),
                        hidden_size, track_sq)
    recorder = StatsRecorder(sites, skip=skip, track_sq=track_sq, hidden=hidden)
    return run_collection(model, tokenizer, corpus, recorder, stats, settings, batch_size=batch_size,
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress, desc="collect")


def language_windows(tokenizer: Any, corpus: Corpus, lang: str, split: str, window: int, max_tokens: int | None,
                     desc: str, progress: bool) -> tuple[Iterator[torch.Tensor], tqdm]:
    """The streamed windows of one language and a token progress bar whose total is reached: for text from memory or
    local files a first streaming pass counts the content tokens the windows will hold (it stops at `max_tokens` and
    keeps no window; its warnings are left to the real pass), so memory does not grow with the corpus; a streamed
    corpus (hub) counts to `max_tokens` (`warn_short` says when a budget was not reached)."""
    total = max_tokens
    if corpus.description.get("kind") in ("udhr", "texts", "text_files"):
        skip = len(window_prefix(tokenizer))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LangNeuronsWarning)
            counted = pack_windows(tokenizer, corpus.documents(lang, split), window, max_tokens)
            total = sum(len(w) - skip for w in counted)
    windows = pack_windows(tokenizer, corpus.documents(lang, split), window, max_tokens)
    return windows, tqdm(total=total, desc=desc, unit="tok", disable=not progress)


def _close(bar: tqdm) -> None:
    """Close a language's bar; a stream that ended before the budget gets its real total."""
    if bar.total is not None and bar.n < bar.total:
        bar.total = bar.n
        bar.refresh()
    bar.close()


FEW_TOKENS = 1000  # below this, per-neuron firing rates of a language are noise


def warn_short(language: str, n_tokens: int, max_tokens: int | None) -> None:
    """Warn when a language's text ran out before its token budget, or is too short to estimate rates."""
    if max_tokens is not None and n_tokens < max_tokens:
        warn(f"'{language}': the text ran out at {n_tokens} of the {max_tokens} tokens asked for; "
             "add text or lower the budget (--max-tokens)")
    if n_tokens < FEW_TOKENS:
        warn(f"'{language}': only {n_tokens} tokens, too few for reliable statistics; give at least {FEW_TOKENS}")


def _flush(rec: Recorder, sums: LanguageSums, k: int, n_local: int) -> None:
    """Move the recorder's sums (all-reduced over ranks) into row `k` of `sums`."""
    taken = {**rec.take(), "n_tokens": torch.tensor(n_local, dtype=torch.long)}
    all_reduce_sum(list(taken.values()))
    rows = sums.tensors()
    for name, value in taken.items():
        rows[name][k] += value


def _save(sums: LanguageSums, path: str | Path, done: list[str], partial: tuple[str, int] | None) -> None:
    """Write a checkpoint of per-language sums, marked incomplete."""
    meta = {**sums.meta, "incomplete": {"done": list(done), "partial": list(partial) if partial else None}}
    type(sums).from_tensors(sums.languages, sums.tensors(), meta).save(path)


def _resume(path: str | Path, sums: LanguageSums, settings: dict[str, Any]) -> tuple[list[str], str | None, int]:
    """Restore rows from a checkpoint (of the same kind) into `sums`; returns (languages done, partial language,
    its windows)."""
    path = Path(path)
    if not path.exists():
        return [], None, 0
    check_checkpoint(path, settings, sums.meta["corpus"], sums.meta["model"]["id"], sums.KIND)
    tensors, meta = load_tensors(path, sums.KIND)
    if meta.get("site") != sums.meta["site"]:
        raise LangNeuronsError(f"{path}: a checkpoint of another model; remove it or choose another output path")
    state = meta.get("incomplete") or {"done": meta["languages"], "partial": None}
    partial = state["partial"]
    rows = sums.tensors()
    for lang in [*state["done"], *([partial[0]] if partial else [])]:
        if lang in sums.languages:
            src, dst = meta["languages"].index(lang), sums.languages.index(lang)
            for name, tensor in rows.items():
                tensor[dst] = tensors[name][src]
    done = [lang for lang in state["done"] if lang in sums.languages]
    return done, (partial[0] if partial else None), (int(partial[1]) if partial else 0)


def check_checkpoint(path: str | Path, settings: dict[str, Any], corpus: dict[str, Any], model: str | None = None,
                     kind: str = KIND) -> None:
    """Fail unless the checkpoint at `path` (if any) can be resumed with these settings, corpus and model id (None:
    not checked). Reads only the metadata, so it runs before the model is loaded."""
    if not Path(path).exists():
        return
    meta = read_meta(path, kind)
    if model is not None and meta.get("model", {}).get("id") != model:
        raise LangNeuronsError(f"{path}: a checkpoint of another model ({meta.get('model', {}).get('id')}); "
                               "remove it or choose another output path")
    old = {k: meta.get("collection", {}).get(k) for k in settings}
    if old != settings or _source(meta.get("corpus", {})) != _source(corpus):
        changed = sorted(k for k in settings if old[k] != settings[k]) or ["corpus"]
        raise LangNeuronsError(
            f"{path}: a checkpoint made with other settings ({', '.join(changed)}: {old}); rerun with the same "
            "settings, or remove it or choose another output path to start over"
        )


def _source(corpus: dict[str, Any]) -> dict[str, Any]:
    """A corpus description without its language list: what must match for a checkpoint to be resumed."""
    return {k: v for k, v in corpus.items() if k not in ("languages", "udhr_codes")}
