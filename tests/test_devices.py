"""Every intermediate on the device of the tensor it meets: a model split over two devices (cuda:0 + cpu when a
GPU is there, else two simulated devices on the CPU, see virtual_devices.py) gives what the unsplit model gives."""

from __future__ import annotations

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer
from virtual_devices import cuda_split, simulated_split

import langneurons as ln
from langneurons.core.lm import mean_nll
from langneurons.stats.relevance import collect_relevance
from langneurons.steering.config import SteeringConfig
from langneurons.steering.generation import generate
from langneurons.tasks.fluency import continuation_nll
from langneurons.tasks.logit_lens import run_logit_lens
from langneurons.tasks.scoring import option_logprobs

SPLITS = [pytest.param(simulated_split, id="simulated"),
          pytest.param(cuda_split, id="cuda0+cpu", marks=pytest.mark.skipif(
              not torch.cuda.is_available(), reason="needs a CUDA GPU"))]


def _everything(model, tok) -> dict:
    """One call of each function that moves tensors between the embedding's and the LM head's devices."""
    corpus = ln.from_texts({lang: SAMPLE[lang] * 3 for lang in ("en", "de")}, heldout_every=0)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=40, window=12, batch_size=2, progress=False)
    neurons = ln.frequency_contrast(stats, 3)
    windows = {lang: [tok(t).input_ids for t in SAMPLE[lang]] for lang in ("en", "de")}
    prompts = ["Q: The dog?\nA:", "Q: Der Hund?\nA:", "Q: Le chat?\nA:"]
    steerings = [None, SteeringConfig({"de": 1.0}, {"en": 0.0}), SteeringConfig({"en": 2.0}, method="add")]
    return {
        "stats": (stats.over_zero, stats.sum),
        "relevance": collect_relevance(model, tok, corpus, max_tokens=20, window=12, batch_size=2,
                                       progress=False).relevance,
        "nll": mean_nll(model, windows, batch_size=2),
        "lens": run_logit_lens(model, tok, {"en": SAMPLE["en"]}, top_k=3, batch_size=2, progress=False).samples,
        "choice": option_logprobs(model, tok, ["The cat", "The cat", "Der Hund", "Der Hund"],
                                  [" sleeps", " runs", " schläft", " a b"]),
        "fluency": continuation_nll(model, tok, prompts, ["yes", "ja nein", ""]),
        "texts": generate(model, tok, prompts, max_new_tokens=5, batch_size=2, stop_strings=["\n"],
                          steerings=steerings, neurons=neurons, stats=stats),
    }


@pytest.mark.parametrize("split", SPLITS)
def test_split_model_gives_the_unsplit_results(split):
    model, tok = make_tiny("llama"), tiny_tokenizer()
    whole = _everything(model, tok)
    with split(model):
        parted = _everything(model, tok)
    _assert_close(parted, whole, exact=split is simulated_split)


def _assert_close(a, b, where: str = "", exact: bool = True) -> None:
    """Equal structure and text; numbers equal up to float rounding (on a GPU, counts of `a > 0` may also move
    by a few where an activation sits at zero within GPU/CPU rounding)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_close(a[k], b[k], f"{where}.{k}", exact)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]", exact)
    elif isinstance(a, torch.Tensor) and not a.is_floating_point() and not exact:
        assert (a.cpu() - b.cpu()).abs().max() <= 2, where
    elif isinstance(a, torch.Tensor | float):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, check_device=False, msg=where)
    else:
        assert a == b, where


def test_the_simulation_catches_a_target_on_the_wrong_device():
    """The simulated split refuses what two GPUs refuse: logits (LM head's device) indexed by targets left on the
    embedding's device."""
    model = make_tiny("llama")
    ids = torch.tensor([[1, 5, 6, 7]])
    with simulated_split(model), pytest.raises(RuntimeError, match="mixes devices"):
        embed = model.get_input_embeddings().weight.device
        logits = model(input_ids=ids.to(embed)).logits
        targets = ids[:, 1:].to(embed)
        logits[:, :-1].gather(-1, targets[..., None])
