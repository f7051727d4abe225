"""Greedy, batched, left-padded generation that returns only the continuations, optionally steered per prompt.

Prompts are texts; how a text becomes tokens is the prompt format, decided here for every generating command:
"plain" puts the text after the tokenizer's own start (`data.windows.window_prefix`, the same start as the statistics'
windows), "chat" makes the text the user's message in the tokenizer's chat template with the assistant's turn
opened, and "auto" (the default) is "chat" when the tokenizer has a chat template and "plain" otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from langneurons.core.distributed import rounds
from langneurons.core.errors import LangNeuronsError
from langneurons.core.lm import embedding_weight
from langneurons.data.prompts import cut
from langneurons.data.windows import describe_start, window_prefix
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import BatchSteering, Steering, SteeringTable

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel

PROMPT_FORMATS = ("auto", "chat", "plain")


def resolve_prompt_format(tokenizer: Any, prompt_format: str = "auto") -> str:
    """"chat" or "plain": `prompt_format`, with "auto" meaning "chat" when the tokenizer has a chat template."""
    if prompt_format not in PROMPT_FORMATS:
        raise LangNeuronsError(f"unknown prompt format {prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise LangNeuronsError("the tokenizer has no chat template; use --prompt-format plain (or auto)")
    if prompt_format == "auto":
        return "chat" if has_template else "plain"
    return prompt_format


def encode_prompt(tokenizer: Any, text: str, prompt_format: str = "auto") -> list[int]:
    """Token ids of one prompt: the tokenizer's start + `text` ("plain"), or `text` as the user's message in the
    chat template with the assistant's turn opened ("chat"; the template writes its own start tokens)."""
    if resolve_prompt_format(tokenizer, prompt_format) == "plain":
        return window_prefix(tokenizer) + tokenizer(text, add_special_tokens=False).input_ids
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return tokenizer(rendered, add_special_tokens=False).input_ids


def prompt_settings(tokenizer: Any, prompt_format: str = "auto") -> dict[str, Any]:
    """The resolved prompt format and the start of plain prompts and statistics windows, as recorded in results."""
    return {"format": resolve_prompt_format(tokenizer, prompt_format), "requested": prompt_format,
            "start": describe_start(tokenizer)}


@dataclass(frozen=True)
class Decoding:
    """How prompts become continuations, the one description every generating task takes and records.

    Greedy decoding of at most `max_new_tokens` new tokens, in batches of at most `batch_size` prompts and (with
    `max_batch_tokens`) at most that many tokens, prompt and new tokens counted; `repetition_penalty` > 1 divides
    the scores of tokens already in the sequence (CTRL's rule; 1.0 is plain greedy); `prompt_format` is "auto",
    "chat" or "plain" (see `encode_prompt`).
    """

    max_new_tokens: int = 40
    batch_size: int = 64
    max_batch_tokens: int | None = None
    repetition_penalty: float = 1.0
    prompt_format: str = "auto"

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or (self.max_batch_tokens is not None
                                                              and self.max_batch_tokens < 1):
            raise LangNeuronsError(f"{self}: max_new_tokens, batch_size and max_batch_tokens must be positive")
        if not self.repetition_penalty > 0:
            raise LangNeuronsError(f"repetition_penalty={self.repetition_penalty}; give a positive number")
        if self.prompt_format not in PROMPT_FORMATS:
            raise LangNeuronsError(f"unknown prompt format {self.prompt_format!r}; use one of "
                                   f"{', '.join(PROMPT_FORMATS)}")

    def resolved(self, tokenizer: Any) -> Decoding:
        """The same decoding with the prompt format "auto" resolved for `tokenizer` (`resolve_prompt_format`)."""
        return replace(self, prompt_format=resolve_prompt_format(tokenizer, self.prompt_format))

    def record(self, tokenizer: Any, stop_strings: Sequence[str]) -> dict[str, Any]:
        """Every generation setting, as recorded in results: the token budget only when there is one, and the
        prompt format as resolved for `tokenizer` (`prompt_settings`)."""
        budget = {} if self.max_batch_tokens is None else {"max_batch_tokens": self.max_batch_tokens}
        return {"decoding": "greedy", "max_new_tokens": self.max_new_tokens, "stop_strings": list(stop_strings),
                "batch_size": self.batch_size, **budget, "padding": "left",
                "repetition_penalty": self.repetition_penalty, "prompt": prompt_settings(tokenizer, self.prompt_format)}


class StopOnStrings(StoppingCriteria):
    """Stop each sequence once its new text contains a stop string.

    Each step decodes only the newest tokens of each row (enough of them to hold the longest stop string, plus
    the ones before that can merge with them), not the whole continuation, so a step costs the same at token 5
    and token 500; a row that has stopped stays stopped.
    """

    def __init__(self, tokenizer: Any, prompt_length: int, stop_strings: Sequence[str]):
        self.tokenizer, self.prompt_length, self.stop_strings = tokenizer, prompt_length, list(stop_strings)
        # a token holds at least one byte, so the last len(stop in bytes) + 2 tokens hold any stop string that a new
        # token completes (+2: tokens that decode together, e.g. a split multi-byte character)
        self.tail = max((len(x.encode()) for x in self.stop_strings), default=1) + 2
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        new = input_ids[:, max(self.prompt_length, input_ids.shape[1] - self.tail) :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        found = torch.tensor([any(x in t for x in self.stop_strings) for t in texts], device=input_ids.device)
        self.done = found if self.done is None or len(self.done) != len(found) else self.done | found
        return cast(torch.BoolTensor, self.done)  # a bool tensor, which transformers annotates as BoolTensor


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom | torch.cuda.OutOfMemoryError)


def token_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None,
                  new_tokens: int = 0) -> list[list[int]]:
    """Indices of rows grouped into batches, longest first: at most `batch_size` rows, and (with
    `max_batch_tokens`) at most that many padded tokens (rows x (longest row + `new_tokens`)) per batch; a row
    longer than the budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is not None and len(batch) < batch_size and (
            max_batch_tokens is None or (len(batch) + 1) * (lengths[batch[0]] + new_tokens) <= max_batch_tokens
        ):
            batch.append(i)
        else:
            batches.append([i])
    return batches


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: Any,
    prompts: Sequence[str],
    decoding: Decoding | None = None,
    *,
    stop_strings: Sequence[str] = (),
    steerings: Sequence[SteeringConfig | None] | None = None,
    neurons: NeuronSet | None = None,
    stats: ActivationStats | None = None,
    progress: bool = False,
    bar: tqdm | None = None,
    **options: Any,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded new tokens, cut at the first stop string).

    `decoding` (default `Decoding()`), with any of its fields given as keywords (`options`, e.g.
    `max_new_tokens=16`) taking precedence. Prompts are sorted by length and left-padded into batches of at most
    `batch_size` prompts and (with `max_batch_tokens`) at most that many tokens, prompt and new tokens counted; a
    batch that runs out of GPU memory is split in halves and retried. With greedy decoding a prompt gets the same
    text batched or alone (up to floating-point ties). `steerings[i]` (with `neurons`, `stats`) steers prompt i;
    prompts with different settings share a batch (each setting is compiled once; a batch applies all of them at
    once). Under torchrun the batches are split over the ranks and every rank returns all texts. Each prompt text
    is encoded by `encode_prompt` in the decoding's prompt format. `progress` shows a bar counting prompts; `bar`,
    an open bar of a larger job, is advanced instead.
    """
    if steerings is not None and len(steerings) != len(prompts):
        raise ValueError("steerings must have one entry (or None) per prompt")
    decoding = replace(decoding or Decoding(), **options).resolved(tokenizer)
    max_new_tokens, repetition_penalty = decoding.max_new_tokens, decoding.repetition_penalty
    encoded = [encode_prompt(tokenizer, p, decoding.prompt_format) for p in prompts]
    compiled = {_key(c): Steering(model, neurons, stats, c) for c in steerings or [] if c is not None}
    table = SteeringTable(model, list(compiled.values())) if compiled else None  # once per run, not per batch
    lengths = [len(ids) for ids in encoded]
    batches = token_batches(lengths, decoding.batch_size, decoding.max_batch_tokens, max_new_tokens)
    out: list[str] = [""] * len(prompts)
    own = bar is None
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress) if bar is None else bar

    def run(rows: list[int]) -> list[str]:
        chunk = [encoded[i] for i in rows]
        configs = [steerings[i] for i in rows] if steerings is not None else None
        return _generate_batch(model, tokenizer, chunk, configs, compiled, table, max_new_tokens, stop_strings,
                               repetition_penalty)

    try:
        for done in rounds(batches, run):
            for rows, texts in done:
                for i, text in zip(rows, texts):
                    out[i] = text
                bar.update(len(rows))
    finally:
        if own:
            bar.close()
    return out


def _generate_batch(model: PreTrainedModel, tokenizer: Any, chunk: list[list[int]], configs: list | None,
                    compiled: dict[str | None, Steering], table: SteeringTable | None, max_new_tokens: int,
                    stop_strings: Sequence[str], repetition_penalty: float) -> list[str]:
    """One left-padded batch; on out-of-memory, its two halves one after the other (down to single prompts)."""
    try:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        batch = _left_padded(chunk, pad_id, embedding_weight(model).device)
        length = batch["input_ids"].shape[1]
        stop = StoppingCriteriaList([StopOnStrings(tokenizer, length, stop_strings)]) if stop_strings else None
        with ExitStack() as stack:
            if configs is not None and any(c is not None for c in configs):
                stack.callback(BatchSteering(model, [compiled.get(_key(c)) for c in configs], table).remove)
            # only the ids and the mask: a tokenizer may also return token_type_ids, which generate() rejects
            lm = cast("GenerationMixin", model)  # a causal LM; PreTrainedModel itself does not declare generate()
            ids = lm.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                              stopping_criteria=stop, top_p=None, top_k=None, temperature=None,
                              repetition_penalty=repetition_penalty)
        return [cut(t, stop_strings) for t in tokenizer.batch_decode(ids[:, length:], skip_special_tokens=True)]
    except Exception as e:
        if not _is_oom(e) or len(chunk) == 1:
            raise
    torch.cuda.empty_cache()
    half = len(chunk) // 2
    halves = [(chunk[:half], None if configs is None else configs[:half]),
              (chunk[half:], None if configs is None else configs[half:])]
    return [text for part, part_configs in halves for text in _generate_batch(
        model, tokenizer, part, part_configs, compiled, table, max_new_tokens, stop_strings, repetition_penalty)]


def _left_padded(rows: Sequence[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of token rows, left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _key(config: SteeringConfig | None) -> str | None:
    return None if config is None else json.dumps(config.to_dict(), sort_keys=True)
