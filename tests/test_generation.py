"""Generation at scale: token-budget batches, halving on out-of-memory, stop strings checked on the new tail only,
steering tables built once per run."""

from __future__ import annotations

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.steering import edits as steering
from langneurons.steering.config import SteeringConfig
from langneurons.steering.generation import Decoding, StopOnStrings, generate, token_batches

PROMPTS = ["Q: The quick brown fox?\nA:", "Q: Все люди?\nA:", "Q: 人人?\nA:", "Q: Le chat dort?\nA:",
           "Q: Der Hund schläft?\nA:"]


@pytest.fixture(scope="module")
def setup():
    model, tok = make_tiny("llama", dtype=torch.float64), tiny_tokenizer()
    corpus = ln.from_texts({k: SAMPLE[k] * 4 for k in ("en", "de", "fr")}, heldout_every=0)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=80, window=16, hidden=True, progress=False)
    return model, tok, stats, ln.frequency_contrast(stats, 5)


def test_token_batches_fill_a_budget_longest_first():
    lengths = [3, 9, 5, 9, 1, 4]
    # by length: 1, 3 (9 each), 2 (5), 5 (4), 0 (3), 4 (1); budget 24 with 2 new tokens per row
    assert token_batches(lengths, batch_size=8, max_batch_tokens=24, new_tokens=2) == [[1, 3], [2, 5, 0], [4]]
    assert token_batches(lengths, batch_size=2, max_batch_tokens=None) == [[1, 3], [2, 5], [0, 4]]
    assert token_batches([50], batch_size=4, max_batch_tokens=10) == [[0]]  # too long for the budget: alone


def test_budget_and_order_do_not_change_the_texts(setup):
    model, tok, _, _ = setup
    one_by_one = [generate(model, tok, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=3, max_batch_tokens=40) == one_by_one


def test_out_of_memory_halves_the_batch(setup, monkeypatch):
    model, tok, _, _ = setup
    expected = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=8)
    original, sizes = model.generate, []

    def small_memory(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", small_memory)
    assert generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=8) == expected
    assert sizes == [5, 2, 3, 1, 2]  # 5 fails; its halves 2 and 3; 3 fails; its halves 1 and 2


def test_stop_check_on_the_tail_agrees_with_the_whole_continuation():
    tok = tiny_tokenizer()
    stops = ["\nQ:", "ört", "or", "e"]
    g = torch.Generator().manual_seed(1)
    ids = torch.full((6, 4), 5)  # the prompt
    tail = StopOnStrings(tok, 4, stops)
    for step in range(1, 30):
        ids = torch.cat([ids, torch.randint(3, 300, (6, 1), generator=g)], 1)
        whole = [any(s in t for s in stops) for t in tok.batch_decode(ids[:, 4:], skip_special_tokens=True)]
        assert tail(ids, None).tolist() == whole, step
    assert any(whole)  # some rows did stop on the way


def test_steering_tables_are_built_and_placed_once_per_run(setup, monkeypatch):
    model, tok, stats, neurons = setup
    built, placed = [], []
    table_init, table_placed = steering.SteeringTable.__init__, steering.SteeringTable.placed

    def count_init(self, *args, **kwargs):
        built.append(1)
        table_init(self, *args, **kwargs)

    def count_placed(self, kind, layer, part, like):
        dtype = None if kind == "neurons" and part == 0 else like.dtype
        placed.append((kind, layer, part) if (kind, layer, part, like.device, dtype) not in self._placed else None)
        return table_placed(self, kind, layer, part, like)

    monkeypatch.setattr(steering.SteeringTable, "__init__", count_init)
    monkeypatch.setattr(steering.SteeringTable, "placed", count_placed)
    configs = [SteeringConfig({"de": 1.0}, {"en": 0.0}), None, SteeringConfig({"fr": 1.0}, method="residual"),
               SteeringConfig({"en": 2.0}, method="scale"), None]
    generate(model, tok, PROMPTS, max_new_tokens=4, batch_size=2, steerings=configs, neurons=neurons, stats=stats)
    copies = [p for p in placed if p is not None]
    assert built == [1]  # three batches, one table
    assert len(copies) == len(set(copies)) > 0  # each matrix copied to the device once


def test_a_table_holds_only_the_edited_neurons(setup):
    model, _, stats, neurons = setup
    configs = [SteeringConfig({"de": 1.0}, {"en": 0.0}), SteeringConfig({"fr": 2.0}, method="scale")]
    compiled = [steering.Steering(model, neurons, stats, c) for c in configs]
    table = steering.SteeringTable(model, compiled)
    for layer, (columns, scales, shifts) in table.neurons.items():
        edited = (neurons.mask("de") | neurons.mask("en") | neurons.mask("fr"))[layer].nonzero()[:, 0]
        assert torch.equal(columns, edited)  # the union of the languages' neurons, nothing else
        for k, s in enumerate(compiled, 1):
            scale, shift = s.tables.get(layer, (torch.ones(48), torch.zeros(48)))
            assert torch.equal(scales[k], scale[columns]) and torch.equal(shifts[k], shift[columns])
        assert torch.equal(scales[0], torch.ones(len(columns))) and torch.equal(shifts[0], torch.zeros(len(columns)))


@pytest.mark.parametrize("field", ["max_new_tokens", "batch_size", "max_batch_tokens"])
def test_decoding_refuses_a_zero_budget(field):
    with pytest.raises(ln.LangNeuronsError, match="must be positive"):
        Decoding(**{field: 0})
