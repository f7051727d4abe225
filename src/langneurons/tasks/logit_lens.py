"""Logit lens: read each layer's residual stream through the final norm and the LM head.

For each prompt, the output of every decoder layer at the prompt's last position goes through the model's final
norm and LM head (once: the decoder layers' outputs are taken before the final norm, which is applied here), and
the top-k next-token candidates are classified by the Unicode script of their text. Per layer and prompt language:
the share of top-k candidates in each script and the mean entropy (nats) of the next-token distribution;
optionally again under steering, to see at which layer an intervention changes the language.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from langneurons.core.artifacts import write_atomic
from langneurons.core.distributed import is_main, rounds
from langneurons.core.errors import LangNeuronsError
from langneurons.core.hooks import Hooks
from langneurons.core.lm import decoder_body, embedding_weight, head_logits
from langneurons.core.sites import find_sites
from langneurons.data.prompts import qa_prompt, questions
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import steer
from langneurons.tasks.lid import _script
from langneurons.tasks.results import run_metadata, write_results

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# "other": letters of another script (Greek, Thai, ...); "none": no letter at all (spaces, digits, punctuation,
# special and byte tokens).
SCRIPTS = ("Latin", "Cyrillic", "Arabic", "Devanagari", "Han", "Kana", "Hangul", "other", "none")
_NAMES = {"Latn": "Latin", "Cyrl": "Cyrillic", "Arab": "Arabic", "Deva": "Devanagari", "Hani": "Han",
          "Kana": "Kana", "Hang": "Hangul"}
_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "layer_norm")
BASELINE = "baseline"


def token_script(text: str) -> str:
    """The script most letters of `text` are written in (one of `SCRIPTS`; Hiragana and Katakana are "Kana"),
    "none" if it has no letter; a tie goes to the script met first."""
    counts = Counter(_NAMES.get(_script(c), "other") for c in text if c.isalpha())
    return counts.most_common(1)[0][0] if counts else "none"


def final_norm(model: PreTrainedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """What the decoder body applies after its last layer: the final norm found beside the decoder layer list
    (Llama `model.norm`, GPT-2 `transformer.ln_f`, ...), then OPT's `project_out` where there is one.
    `run_logit_lens` checks it against the body's own output."""
    parent = model.get_submodule(find_sites(model).layers_path.rsplit(".", 1)[0])
    norm = next((m for m in (getattr(parent, n, None) for n in _NORM_NAMES) if isinstance(m, nn.Module)), None)
    project = getattr(parent, "project_out", None)
    steps = [m for m in (norm, project) if isinstance(m, nn.Module)]

    def apply(hidden: torch.Tensor) -> torch.Tensor:
        for step in steps:
            hidden = step(hidden)
        return hidden

    return apply


def _last_states(model: PreTrainedModel, ids: torch.Tensor,
                 mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each decoder layer's output and the body's final (normed) output at each row's last real position:
    ([layer] -> [B, H], [B, H]). Rows are right-padded, so real positions never see the padding."""
    sites = find_sites(model)
    last = mask.sum(1) - 1
    rows = torch.arange(len(ids), device=ids.device)
    seen: dict[int, torch.Tensor] = {}

    def keep(i: int):
        return lambda h: seen.__setitem__(i, h[rows.to(h.device), last.to(h.device)].clone())  # split models

    with Hooks(sites) as hooks:
        for i, layer in enumerate(sites.layers):
            hooks.read(layer, keep(i))
        final = decoder_body(model)(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    return [seen[i] for i in range(sites.n_layers)], final[rows.to(final.device), last.to(final.device)]


@dataclass
class LogitLensResult:
    """Per condition ("baseline", and the steering's description), prompt language and layer: the share of the
    top-k candidates in each script and the mean entropy. `samples`: per prompt and layer, the entropy and the
    top-k candidates as [token id, text, probability, script]."""

    languages: list[str]
    conditions: list[str]
    layers: dict[str, dict[str, list[dict[str, Any]]]]  # condition -> language -> [{"layer", "shares", "entropy"}]
    samples: list[dict[str, Any]]
    meta: dict[str, Any]
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What logit_lens.json holds under "summary"."""
        return {"languages": self.languages, "conditions": self.conditions, "scripts": list(SCRIPTS),
                "layers": self.layers, "seconds": round(self.seconds, 2)}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write logit_lens.json, logit_lens_samples.jsonl and logit_lens.png/.svg (atomically); returns paths."""
        from langneurons.figures.charts import logit_lens_lines

        if not is_main():  # under torchrun rank 0 writes
            return {}
        out = Path(out_dir)
        paths = {"summary": write_results(out / "logit_lens.json", self.meta, self.summary()),
                 "samples": out / "logit_lens_samples.jsonl"}
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.samples)
        write_atomic(paths["samples"], lambda p: p.write_text(text, "utf-8"))
        paths["png"], paths["svg"] = logit_lens_lines(self.summary(), out / "logit_lens.png")
        return paths


@torch.inference_mode()
def _lens(model: PreTrainedModel, tok: Any, prompts: list[tuple[str, str]], top_k: int, batch_size: int,
          progress: bool, desc: str) -> list[list[dict[str, Any]]]:
    """For each (language, prompt): per layer {"entropy", "top": [(token id, probability)]}."""
    device = embedding_weight(model).device
    norm = final_norm(model)

    def lens(start: int) -> list[list[dict[str, Any]]]:
        encoded = [tok(p).input_ids for _, p in prompts[start : start + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.zeros(len(encoded), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(encoded):
            ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1
        states, final = _last_states(model, ids.to(device), mask.to(device))
        normed = [norm(h) for h in states]
        scale = float(final.float().abs().max())
        if not torch.allclose(normed[-1].float().to(final.device), final.float(), rtol=1e-3,
                              atol=1e-3 * max(scale, 1.0)):
            raise LangNeuronsError(
                f"the final norm found for this {model.config.model_type} model does not reproduce the decoder "
                "body's output; the logit lens does not support this family yet (report it)"
            )
        rows: list[list[dict[str, Any]]] = [[] for _ in encoded]
        for h in normed:
            logp = torch.log_softmax(head_logits(model, h).float(), -1)
            entropy = -(logp.exp() * logp).sum(-1)
            top = logp.topk(top_k, -1)
            for i in range(len(encoded)):
                rows[i].append({"entropy": float(entropy[i]),
                                "top": list(zip(top.indices[i].tolist(), top.values[i].exp().tolist()))})
        return rows

    out: list[list[dict[str, Any]]] = []
    starts = range(0, len(prompts), batch_size)
    bar = tqdm(total=len(starts), desc=desc, unit="batch", disable=not progress)
    for done in rounds(starts, lens):  # under torchrun: batches split over ranks, all rows on every rank
        out += [row for _, rows in done for row in rows]
        bar.update(len(done))
    bar.close()
    return out


def run_logit_lens(
    model: PreTrainedModel,
    tok: Any,
    prompts_by_language: Mapping[str, Sequence[str]],
    top_k: int = 10,
    steering: SteeringConfig | None = None,
    neurons: NeuronSet | None = None,
    stats: ActivationStats | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> LogitLensResult:
    """Logit lens over the prompts of each language: per layer, script shares of the top-k candidates at each
    prompt's last position and the entropy; with `steering` (and its `neurons` / `stats`), once more steered."""
    if top_k <= 0 or batch_size <= 0:
        raise LangNeuronsError(f"top_k and batch_size must be positive (got {top_k}, {batch_size})")
    if not prompts_by_language:
        raise LangNeuronsError("no prompts; pass {language: [prompt, ...]}")
    prompts = [(lang, p) for lang, ps in prompts_by_language.items() for p in ps]
    bad = [lang for lang, ps in prompts_by_language.items() if isinstance(ps, str) or not ps]
    if bad or not all(isinstance(p, str) and p.strip() for _, p in prompts):
        raise LangNeuronsError("prompts must be non-empty lists of non-empty strings per language"
                               + (f" (check {', '.join(bad)})" if bad else ""))
    if steering is not None and steering.generated_only:
        raise LangNeuronsError("generated_only steering edits nothing in a prompt; the logit lens reads prompts")
    start = time.perf_counter()
    conditions = {BASELINE: _lens(model, tok, prompts, top_k, batch_size, progress, BASELINE)}
    if steering is not None:
        with steer(model, neurons, stats, config=steering) as s:
            conditions[s.config.describe()] = _lens(model, tok, prompts, top_k, batch_size, progress, "steered")
    texts = _decoder(tok)
    layers: dict[str, dict[str, list[dict[str, Any]]]] = {}
    samples = []
    for name, per_prompt in conditions.items():
        layers[name] = {}
        for lang in prompts_by_language:
            mine = [(i, r) for i, ((pl, _), r) in enumerate(zip(prompts, per_prompt)) if pl == lang]
            rows = []
            for layer in range(len(mine[0][1])):
                shares = Counter({s: 0.0 for s in SCRIPTS})
                for _, r in mine:
                    shares.update(Counter(token_script(texts(t)) for t, _ in r[layer]["top"]))
                rows.append({"layer": layer, "shares": {s: shares[s] / (top_k * len(mine)) for s in SCRIPTS},
                             "entropy": sum(r[layer]["entropy"] for _, r in mine) / len(mine)})
            layers[name][lang] = rows
        samples += [{"condition": name, "language": lang, "prompt": prompt, "layer": layer, "entropy": step["entropy"],
                     "top": [[t, texts(t), p, token_script(texts(t))] for t, p in step["top"]]}
                    for (lang, prompt), steps in zip(prompts, per_prompt) for layer, step in enumerate(steps)]
    settings = {"top_k": top_k, "n_prompts": {lang: len(ps) for lang, ps in prompts_by_language.items()},
                "position": "last prompt token", "steering": steering.to_dict() if steering else None,
                "neurons": neurons.meta.get("method") if neurons is not None else None}
    return LogitLensResult(list(prompts_by_language), list(conditions), layers, samples,
                           run_metadata(model, "logit-lens", settings), time.perf_counter() - start)


def _decoder(tok: Any) -> Callable[[int], str]:
    """Token id -> its text (decoded alone), memoised."""
    cache: dict[int, str] = {}

    def text(token: int) -> str:
        if token not in cache:
            cache[token] = tok.decode([token])
        return cache[token]

    return text


def builtin_prompts(languages: Sequence[str], split: str = "all") -> dict[str, list[str]]:
    """The built-in questions of each language as "Q: ...\\nA:" prompts."""
    return {lang: [qa_prompt(q) for q in questions(lang, split)] for lang in languages}


