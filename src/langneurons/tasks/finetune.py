"""Neuron-only fine-tuning: train just one language's neurons (their input rows and output columns).

Neuron `j` of layer `l` owns row `j` of each linear that makes it (`gate_proj` and `up_proj`, both halves of a
fused `gate_up_proj`, or `fc_in`; with the bias entry where there is one) and column `j` of the linear that reads
it (`down_proj` / `fc_out`). Training never touches the model's parameters: every selected slice gets a trainable
delta (zero at the start) that a forward hook adds to the linear's output, so the optimizer (AdamW, its weight
decay included) holds the deltas and nothing else, and every other entry stays bit-identical by construction.
Weight decay therefore pulls the slices back toward the base model's values, not toward zero. At the end the
best deltas (by validation NLL) are written into the slices, and `FinetuneDelta` keeps the new slices, saved as
safetensors, to be applied to a fresh copy of the base model (and undone).

Early stopping watches a validation part of the training documents (every `valid_every`-th one); the corpus's
held-out split is used only for the NLL reported before and after, so model selection does not bias it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from langneurons.core.artifacts import load_tensors, save_tensors
from langneurons.core.errors import LangNeuronsError
from langneurons.core.hooks import Hooks
from langneurons.core.lm import embedding_weight, head_weight
from langneurons.core.models import model_id, model_revision
from langneurons.core.provenance import model_meta
from langneurons.core.sites import NeuronSites, find_sites
from langneurons.data.corpus import Corpus
from langneurons.data.windows import pack_windows
from langneurons.identify.neurons import NeuronSet

if TYPE_CHECKING:
    from transformers import PreTrainedModel

KIND = "finetune"


def _is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2 family): a linear whose weight is stored [in, out]."""
    weight = getattr(module, "weight", None)
    return not isinstance(module, nn.Linear) and hasattr(module, "nf") and weight is not None and weight.dim() == 2


class _Edit:
    """A trainable delta on some output units (`role` "rows": a linear making neurons) or input units ("cols":
    the linear reading them) of one linear layer, added to its output by a forward hook."""

    def __init__(self, path: str, module: nn.Module, role: str, index: torch.Tensor):
        if not (isinstance(module, nn.Linear) or _is_conv1d(module)):
            raise LangNeuronsError(
                f"cannot fine-tune {path}: {type(module).__name__} is not nn.Linear or Conv1D "
                "(quantized layers cannot be trained); load the model in float32 or bfloat16"
            )
        self.path, self.module, self.role, self.conv1d = path, module, role, _is_conv1d(module)
        weight = module.get_parameter("weight")
        n_in, n_out = weight.shape if self.conv1d else weight.shape[::-1]
        self.index = index.to(weight.device)
        size = n_out if role == "rows" else n_in
        if int(index.max()) >= size:
            raise LangNeuronsError(f"neuron index {int(index.max())} is out of range for {path} ({size} units)")
        shape = (len(index), n_in) if role == "rows" else (n_out, len(index))
        self.weight = nn.Parameter(torch.zeros(shape, dtype=torch.float32, device=weight.device))
        bias = getattr(module, "bias", None)
        self.bias = (nn.Parameter(torch.zeros(len(index), dtype=torch.float32, device=weight.device))
                     if role == "rows" and bias is not None else None)

    def parameters(self) -> list[nn.Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def _edit(self, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.role == "rows":
            extra = x @ self.weight.T
            if self.bias is not None:
                extra = extra + self.bias
            return output.index_add(-1, self.index, extra.to(output.dtype))
        return output + (x.index_select(-1, self.index) @ self.weight.T).to(output.dtype)

    def attach(self, hooks: Hooks) -> None:
        """Add the delta to the linear's output while `hooks` are open."""
        hooks.edit(self.module, self._edit, with_input=True)

    def slices(self) -> list[tuple[str, nn.Parameter, int, torch.Tensor]]:
        """(parameter name, parameter, dimension, delta laid out like the parameter's slice) per parameter."""
        w_dim = (1 if self.role == "rows" else 0) if self.conv1d else (0 if self.role == "rows" else 1)
        delta = self.weight.detach().T if self.conv1d else self.weight.detach()
        out = [(f"{self.path}.weight", self.module.get_parameter("weight"), w_dim, delta)]
        if self.bias is not None:
            out.append((f"{self.path}.bias", self.module.get_parameter("bias"), 0, self.bias.detach()))
        return out


def _edits(model: PreTrainedModel, sites: NeuronSites, indices: Sequence[torch.Tensor]) -> list[_Edit]:
    """The deltas for the selected neurons of each layer: rows of every `up` linear, columns of `down`."""
    names = {id(m): name for name, m in model.named_modules()}
    n = sites.n_neurons
    edits = []
    for layer, index in enumerate(indices):
        if len(index) == 0:
            continue
        for up in sites.ups[layer]:
            rows = torch.cat([index, index + n]) if sites.spec.fused_gate_up else index
            edits.append(_Edit(names[id(up)], up, "rows", rows))
        edits.append(_Edit(names[id(sites.downs[layer])], sites.downs[layer], "cols", index))
    return edits


@dataclass
class FinetuneDelta:
    """Fine-tuned slices: per parameter, indices along one dimension and the new values there, plus metadata
    (model, language, neuron set, settings, NLL before and after). `undo` restores the values it replaced in the
    model it was last applied to (set by `finetune` and `apply`)."""

    tensors: dict[str, torch.Tensor]  # "index/<param>" (int64) and "value/<param>"; "neurons/<layer>" (int64)
    meta: dict[str, Any]
    undo: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def n_parameters(self) -> int:
        """Trained entries (weights and biases)."""
        return sum(t.numel() for k, t in self.tensors.items() if k.startswith("value/"))

    def save(self, path: str | Path) -> None:
        """Write the slices as safetensors with the metadata in the header, atomically."""
        save_tensors(path, KIND, self.tensors, self.meta)

    @classmethod
    def load(cls, path: str | Path) -> FinetuneDelta:
        """Read a delta written by `save`."""
        tensors, meta = load_tensors(path, KIND)
        if not isinstance(meta.get("slices"), list) or not meta["slices"]:
            raise LangNeuronsError(f"{path}: lists no slices; re-create it with `langneurons finetune`")
        for entry in meta["slices"]:
            if f"index/{entry.get('param')}" not in tensors or f"value/{entry.get('param')}" not in tensors:
                raise LangNeuronsError(f"{path}: lacks the tensors of {entry.get('param')}; re-create it")
        return cls(tensors, meta)

    def check_model(self, model: PreTrainedModel, check_id: bool = True) -> dict[str, nn.Parameter]:
        """Fail with one line unless the delta fits `model`; returns the parameters it writes."""
        mine = model_id(model)
        made = self.meta.get("model", {})
        site, theirs = self.meta.get("site", {}), find_sites(model).describe()
        keys = ("model_type", "n_layers", "n_neurons")
        if any(site.get(k) != theirs[k] for k in keys):
            raise LangNeuronsError(
                f"delta made for {made.get('id')} ({site.get('model_type')}, {site.get('n_layers')} layers x "
                f"{site.get('n_neurons')} neurons) does not fit {mine} ({theirs['model_type']}, "
                f"{theirs['n_layers']} x {theirs['n_neurons']}); fine-tune this model"
            )
        if check_id and (made.get("id") != mine or made.get("revision") != model_revision(model)):
            raise LangNeuronsError(
                f"delta made for {made.get('id')} (revision {made.get('revision')}), not {mine} "
                f"(revision {model_revision(model)}); load that model, or pass check_id=False (--force)"
            )
        params = dict(model.named_parameters())
        out = {}
        for entry in self.meta["slices"]:
            name = entry["param"]
            if name not in params or list(params[name].shape) != list(entry["shape"]):
                have = list(params[name].shape) if name in params else "no such parameter"
                raise LangNeuronsError(
                    f"delta slice {name} {entry['shape']} does not fit {mine} ({have}); fine-tune this model"
                )
            dim, index, value = int(entry["dim"]), self.tensors[f"index/{name}"], self.tensors[f"value/{name}"]
            expected = list(entry["shape"])
            expected[dim] = len(index)
            if list(value.shape) != expected or index.dtype != torch.long or int(index.max()) >= entry["shape"][dim]:
                raise LangNeuronsError(f"delta slice {name} is damaged (indices or values off); re-create it")
            out[name] = params[name]
        return out

    @torch.no_grad()
    def apply(self, model: PreTrainedModel, check_id: bool = True) -> Callable[[], None]:
        """Write the slices into `model` (checked first: nothing is written if any slice does not fit); returns
        (and keeps as `undo`) a function that puts the replaced values back."""
        params = self.check_model(model, check_id)
        saved = []
        for entry in self.meta["slices"]:
            name, dim = entry["param"], int(entry["dim"])
            param = params[name]
            index = self.tensors[f"index/{name}"].to(param.device)
            saved.append((param, dim, index, param.index_select(dim, index).clone()))
            param.index_copy_(dim, index, self.tensors[f"value/{name}"].to(param.device, param.dtype))

        @torch.no_grad()
        def undo() -> None:
            for param, dim, index, old in saved:
                param.index_copy_(dim, index, old)

        self.undo = undo
        return undo


def apply_finetune(model: PreTrainedModel, delta: str | Path | FinetuneDelta, check_id: bool = True) -> FinetuneDelta:
    """Load a delta file (or take a `FinetuneDelta`) and write its slices into `model`; `.undo()` restores the base."""
    delta = delta if isinstance(delta, FinetuneDelta) else FinetuneDelta.load(delta)
    delta.apply(model, check_id)
    return delta


@contextmanager
def finetuned(model: PreTrainedModel, delta: str | Path | FinetuneDelta,
              check_id: bool = True) -> Iterator[FinetuneDelta]:
    """`with finetuned(model, "delta.safetensors"):` the model holds the fine-tuned slices inside the block."""
    delta = delta if isinstance(delta, FinetuneDelta) else FinetuneDelta.load(delta)
    undo = delta.apply(model, check_id)
    try:
        yield delta
    finally:
        undo()


def _batches(windows: list[torch.Tensor], batch_size: int, generator: torch.Generator) -> Iterator[list[torch.Tensor]]:
    """Endless shuffled batches, one pass over all windows per epoch."""
    while True:
        order = torch.randperm(len(windows), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield [windows[i] for i in order[start : start + batch_size]]


def _loss_backward(model: PreTrainedModel, batch: list[torch.Tensor], pad_id: int, device: torch.device) -> float:
    """Mean next-token cross-entropy over the real tokens of right-padded windows (padding is never a target),
    with its backward pass done. The LM head runs on chunks of positions, each chunk's backward right after its
    forward, so a large vocabulary never holds the logits of the whole batch and the head is not recomputed."""
    from langneurons.core.lm import HEAD_ELEMENTS, decoder_body, head_logits

    width = max(len(w) for w in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, w in enumerate(batch):
        ids[i, : len(w)], mask[i, : len(w)] = w, 1
    ids, mask = ids.to(device), mask.to(device)
    hidden = decoder_body(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    keep = mask[:, 1:].bool()
    states, targets = hidden[:, :-1][keep], ids[:, 1:][keep]
    cut = states.detach().requires_grad_()
    size = max(1, HEAD_ELEMENTS // head_weight(model).shape[0])
    total = 0.0
    for i in range(0, len(targets), size):
        logits = head_logits(model, cut[i : i + size]).float()
        nll = nn.functional.cross_entropy(logits, targets[i : i + size], reduction="sum") / len(targets)
        nll.backward()
        total += float(nll.detach())
    states.backward(cut.grad)
    return total


def _split_documents(corpus: Corpus, language: str, valid_every: int) -> tuple[list[str], list[str]]:
    """The training documents of `language`, and every `valid_every`-th of them apart for validation."""
    docs = list(corpus.documents(language, "train"))
    if valid_every <= 0:
        return docs, []
    valid = [d for i, d in enumerate(docs) if i % valid_every == valid_every - 1]
    train = [d for i, d in enumerate(docs) if i % valid_every != valid_every - 1]
    return train, valid


def _provenance(neurons: NeuronSet, indices: list[torch.Tensor]) -> dict[str, Any]:
    """Where the neurons came from, and how many were trained per layer."""
    keep = ("method", "settings", "model", "created", "source")
    return {**{k: neurons.meta[k] for k in keep if k in neurons.meta}, "languages": neurons.languages,
            "count": sum(len(i) for i in indices), "per_layer": [len(i) for i in indices]}


def _train(model: PreTrainedModel, edits: list[_Edit], train: list[torch.Tensor], valid: list[list[int]], language: str,
           pad_id: int, *, steps: int, lr: float, weight_decay: float, max_grad_norm: float | None, batch_size: int,
           eval_every: int, patience: int, seed: int, progress: bool) -> dict[str, Any]:
    """The training loop: every model parameter frozen, the deltas' hooks attached; leaves the best deltas in
    place (the last ones without validation) and returns what happened."""
    from langneurons.core.lm import mean_nll

    device = embedding_weight(model).device
    params = [p for e in edits for p in e.parameters()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    history: list[dict[str, Any]] = []
    step, stopped, bad = 0, "steps", 0
    hooks = Hooks()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for e in edits:
            e.attach(hooks)
        valid_before = mean_nll(model, {language: valid})[language] if valid else None
        best, best_step, best_state = valid_before, 0, [p.detach().clone() for p in params]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        with tqdm(total=steps, desc=f"finetune {language}", unit="step", disable=not progress) as bar:
            for batch in _batches(train, batch_size, generator):
                optimizer.zero_grad(set_to_none=True)
                losses.append(_loss_backward(model, batch, pad_id, device))
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if step % eval_every == 0 or step == steps:
                    row: dict[str, Any] = {"step": step, "train_loss": sum(losses) / len(losses)}
                    losses = []
                    if valid:
                        row["valid_nll"] = mean_nll(model, {language: valid})[language]
                        bar.set_postfix(loss=f"{row['train_loss']:.3f}", valid=f"{row['valid_nll']:.3f}")
                        if row["valid_nll"] < best:
                            best, best_step, bad = row["valid_nll"], step, 0
                            best_state = [p.detach().clone() for p in params]
                        else:
                            bad += 1
                    history.append(row)
                    if bad >= patience:
                        stopped = "patience"
                        break
                if step >= steps:
                    break
        if valid:
            with torch.no_grad():
                for p, value in zip(params, best_state, strict=True):
                    p.copy_(value)
        else:
            best_step = step
    finally:
        hooks.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    return {"steps": step, "best_step": best_step, "stopped": stopped, "history": history,
            "valid_nll": {"before": valid_before, "after": best}}


@torch.no_grad()
def _merge(edits: list[_Edit]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], Callable[[], None]]:
    """Add the deltas into their slices of the model; returns the new slices (file tensors), their description,
    and a function that restores the old values."""
    tensors: dict[str, torch.Tensor] = {}
    slices, saved = [], []
    for e in edits:
        for name, param, dim, delta in e.slices():
            saved.append((param, dim, e.index, param.index_select(dim, e.index).clone()))
            param.index_add_(dim, e.index, delta.to(param.dtype))
            tensors[f"index/{name}"] = e.index.cpu().clone()
            tensors[f"value/{name}"] = param.index_select(dim, e.index).cpu()
            slices.append({"param": name, "dim": dim, "shape": list(param.shape)})

    @torch.no_grad()
    def undo() -> None:
        for param, dim, index, old in saved:
            param.index_copy_(dim, index, old)

    return tensors, slices, undo


def finetune(
    model: PreTrainedModel,
    tokenizer: Any,
    neurons: NeuronSet | str | Path,
    language: str,
    corpus: Corpus,
    *,
    steps: int = 200,
    lr: float = 1e-4,
    batch_size: int = 4,
    window: int = 256,
    max_tokens: int | None = None,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    valid_every: int = 10,
    eval_every: int = 10,
    patience: int = 3,
    eval_languages: Sequence[str] | None = None,
    eval_tokens: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FinetuneDelta:
    """Train only `language`'s neurons of `neurons` on that language's training text of `corpus`.

    AdamW (`lr`, `weight_decay` pulling toward the base values, gradients clipped to `max_grad_norm`) for at
    most `steps` steps of `batch_size` packed windows of `window` tokens (at most `max_tokens` training tokens).
    Every `eval_every` steps the NLL on the validation documents (every `valid_every`-th training document;
    0: none, no early stopping) is measured; training stops after `patience` evaluations without improvement
    and keeps the best deltas. The model runs in eval mode (no dropout) and ends up holding the fine-tuned
    slices (`delta.undo()` restores it). Held-out NLL (corpus "heldout" split, at most `eval_tokens` tokens per
    language) before and after is reported in `delta.meta["nll"]` for `language` and `eval_languages` (default:
    the neuron set's languages that the corpus has).
    """
    from langneurons.core.lm import mean_nll
    from langneurons.data.windows import heldout_windows

    start = time.perf_counter()
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every),
                        ("patience", patience)):
        if value <= 0:
            raise LangNeuronsError(f"{name} must be positive, got {value}")
    if not lr > 0 or weight_decay < 0 or valid_every < 0:
        raise LangNeuronsError(f"lr must be positive, weight_decay and valid_every >= 0; got lr={lr}, "
                               f"weight_decay={weight_decay}, valid_every={valid_every}")
    if isinstance(neurons, (str, Path)):
        source = str(neurons)
        neurons = NeuronSet.load(neurons)
        neurons.meta.setdefault("source", source)
    neurons.check_model(model)
    sites = find_sites(model)
    indices = neurons.indices(language)
    if sum(len(i) for i in indices) == 0:
        raise LangNeuronsError(f"language '{language}' has no neurons in this set; pick another language or set")
    if language not in corpus.languages:
        raise LangNeuronsError(f"the corpus has no '{language}' text; it has {', '.join(corpus.languages)}")
    if eval_languages is None:
        eval_languages = [lang for lang in neurons.languages if lang in corpus.languages]
    eval_languages = [language] + [lang for lang in eval_languages if lang != language]

    train_docs, valid_docs = _split_documents(corpus, language, valid_every)
    train = list(pack_windows(tokenizer, train_docs, window, max_tokens))
    train = [w for w in train if len(w) > 1]
    if not train:
        raise LangNeuronsError(f"no '{language}' training text in the corpus; give more documents")
    valid = [w.tolist() for w in pack_windows(tokenizer, valid_docs, window) if len(w) > 1] if valid_docs else []
    heldout = heldout_windows(tokenizer, corpus, eval_languages, max_tokens=eval_tokens, window=window)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    was_training = model.training
    model.eval()
    try:
        before = mean_nll(model, heldout)
        edits = _edits(model, sites, indices)
        run = _train(model, edits, train, valid, language, pad_id, steps=steps, lr=lr, weight_decay=weight_decay,
                     max_grad_norm=max_grad_norm, batch_size=batch_size, eval_every=eval_every,
                     patience=patience, seed=seed, progress=progress)
        tensors, slices, undo = _merge(edits)
        try:
            after = mean_nll(model, heldout)
        except BaseException:  # a failed (or interrupted) run leaves the model as it was
            undo()
            raise
    finally:
        model.train(was_training)
    for layer, index in enumerate(indices):
        if len(index):
            tensors[f"neurons/{layer}"] = index.cpu().clone()

    settings = {"steps": steps, "lr": lr, "batch_size": batch_size, "window": window, "max_tokens": max_tokens,
                "weight_decay": weight_decay, "max_grad_norm": max_grad_norm, "valid_every": valid_every,
                "eval_every": eval_every, "patience": patience, "eval_tokens": eval_tokens, "seed": seed,
                "optimizer": "AdamW"}
    meta = {
        "model": model_meta(model),
        "site": sites.describe(),
        "shape": {"layers": sites.n_layers, "neurons": sites.n_neurons},
        "language": language,
        "neurons": _provenance(neurons, indices),
        "corpus": corpus.describe(),
        "settings": settings,
        "slices": slices,
        "trainable_parameters": sum(p.numel() for e in edits for p in e.parameters()),
        "training": {"steps": run["steps"], "best_step": run["best_step"], "stopped": run["stopped"],
                     "train_windows": len(train), "train_tokens": sum(len(w) - 1 for w in train),
                     "valid_windows": len(valid), "seconds": round(time.perf_counter() - start, 1)},
        "valid_nll": run["valid_nll"],
        "nll": {"before": before, "after": after},
        "history": run["history"],
    }
    return FinetuneDelta(tensors, meta, undo)
