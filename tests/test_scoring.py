"""Option log-likelihoods against a hand loop on three families; SQuAD exact match and token F1 (XQuAD) by hand."""

import warnings

import pytest
import torch
from tiny import make_tiny, tiny_tokenizer

from langneurons.core.lm import cached_forward
from langneurons.tasks.scoring import option_logprobs
from langneurons.tasks.xquad import answer_tokens, exact_match, token_f1

# ----------------------------------------------------------------------------------------------------------
# independent reference: one sequence at a time, full vocabulary, no padding


def hand_logprob(model, tok, context: str, option: str) -> tuple[float, int]:
    """Sum of log p(option tokens | context) and the option's token count, one unpadded sequence at a time."""
    stripped = context.rstrip()
    option = context[len(stripped):] + option
    ctx = tok(stripped).input_ids
    joint = tok(stripped + option).input_ids
    assert joint[: len(ctx)] == ctx  # the test texts split cleanly at the boundary
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([joint])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    total = sum(float(logp[pos - 1, joint[pos]]) for pos in range(len(ctx), len(joint)))
    return total, len(joint) - len(ctx)


LONG = "All human beings are born free and equal in dignity and rights. Question: who is free? Answer: "
PAIRS = [("The quick brown fox", " jumps over the lazy dog."), ("Der Hund", " schläft."), (LONG, "All human beings"),
         ("Le chat", " dort."), ("人人生而自由，", "在尊严和权利上一律平等。"), ("Der Hund", " spielt im Park."),
         ("Собака", " спит."), (LONG, "Nobody"), ("Le chat", "!"), (LONG, "The quick brown fox jumps over the dog")]


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_option_logprobs_match_a_hand_loop(family):
    # contexts of very different lengths (padding), several options per context (a shared cache), one-token
    # options, and contexts longer than gemma3's tiny sliding window (16)
    model, tok = make_tiny(family, dtype=torch.float64), tiny_tokenizer()
    contexts, options = zip(*PAIRS)
    hand = [hand_logprob(model, tok, c, o) for c, o in PAIRS]
    assert min(h[1] for h in hand) == 1 and len(tok(LONG).input_ids) > 16
    got = option_logprobs(model, tok, contexts, options, batch_size=4)
    assert got == pytest.approx([h[0] for h in hand], abs=1e-8)
    per_token = option_logprobs(model, tok, contexts, options, batch_size=100, normalize="token")
    assert per_token == pytest.approx([t / n for t, n in hand], abs=1e-8)
    per_char = option_logprobs(model, tok, contexts, options, batch_size=1, normalize="char")
    chars = [len(c[len(c.rstrip()):] + o) for c, o in PAIRS]
    assert per_char == pytest.approx([t / k for (t, _), k in zip(hand, chars)], abs=1e-8)
    assert all(h[0] < 0 for h in hand)


# ----------------------------------------------------------------------------------------------------------
# SQuAD exact match and token F1, by hand


def test_exact_match_and_f1_by_hand():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"], "en") == 1.0  # case, punctuation, article
    assert exact_match("Eiffel", ["eiffel tower"], "en") == 0.0
    assert token_f1("in Paris France", ["Paris"], "en") == pytest.approx(0.5)  # P 1/3, R 1
    assert token_f1("a a b", ["a b b"], "de") == pytest.approx(2 / 3)  # multiset overlap 2, not set overlap
    assert token_f1("Paris", ["London", "Paris city"], "en") == pytest.approx(2 / 3)  # best gold: P 1, R 1/2
    assert token_f1("Berlin", ["Paris"], "en") == 0.0
    assert answer_tokens("the cat", "de") == ["the", "cat"] and answer_tokens("the cat", "en") == ["cat"]
    assert exact_match("", ["the"], "en") == 1.0 and token_f1("", ["cat"], "en") == 0.0


def test_chinese_is_scored_by_characters():
    assert answer_tokens("北京大学", "zh") == ["北", "京", "大", "学"]
    assert token_f1("北京大学", ["北京"], "zh") == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert exact_match("北京。", ["北京"], "zh") == 1.0  # full-width punctuation dropped
    assert answer_tokens("1911年", "zh") == ["1911", "年"]
    assert token_f1("约6400公里", ["6400公里"], "zh") == pytest.approx(2 * (3 / 4) / (3 / 4 + 1))  # P 3/4, R 1
    assert answer_tokens("สวัสดี", "th") == list("สวัสดี")


# ----------------------------------------------------------------------------------------------------------
# loaders




@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cached_forward_continues_its_cache_without_a_deprecation_warning(family):
    # the cache goes in under whichever name this transformers takes: continuing it gives the logits of one
    # full pass, and no FutureWarning about a renamed argument is raised
    model = make_tiny(family, dtype=torch.float64)
    ids = torch.tensor([[1, 5, 9, 14, 20, 33, 41]])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        whole = model(input_ids=ids, use_cache=False).logits
        _, cache = cached_forward(model, input_ids=ids[:, :4])
        assert cache.get_seq_length() == 4
        out, cache = cached_forward(model, cache, input_ids=ids[:, 4:])
    assert cache.get_seq_length() == 7
    torch.testing.assert_close(out.logits, whole[:, 4:], rtol=0, atol=1e-10)
