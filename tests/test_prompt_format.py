"""Prompt formats (plain / chat / auto), the shared start of windows and prompts, and JSONL question files."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny import make_tiny, tiny_tokenizer

from langneurons.core.errors import LangNeuronsError
from langneurons.data.prompts import load_questions, question_prompt
from langneurons.data.windows import describe_start, pack_windows, window_prefix
from langneurons.steering.generation import encode_prompt, generate, prompt_settings, resolve_prompt_format
from langneurons.tasks.fluency import continuation_nll

TEMPLATE = ("{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def chat_tokenizer(add_bos: bool = True):
    tok = copy.deepcopy(tiny_tokenizer(add_bos))  # tiny_tokenizer is shared (cached): never change it in place
    tok.chat_template = TEMPLATE
    return tok


def test_resolve_prompt_format() -> None:
    assert resolve_prompt_format(tiny_tokenizer()) == "plain"
    assert resolve_prompt_format(chat_tokenizer()) == "chat"
    assert resolve_prompt_format(chat_tokenizer(), "plain") == "plain"
    with pytest.raises(LangNeuronsError, match=r"no chat template.*--prompt-format plain"):
        resolve_prompt_format(tiny_tokenizer(), "chat")
    with pytest.raises(LangNeuronsError, match="unknown prompt format"):
        resolve_prompt_format(tiny_tokenizer(), "raw")


@pytest.mark.parametrize("add_bos", [True, False])
def test_plain_prompts_and_windows_start_alike(add_bos: bool) -> None:
    tok = tiny_tokenizer(add_bos)
    start = [1] if add_bos else []  # the tokenizer's own rule: BOS only where tok("x") puts it
    assert window_prefix(tok) == start
    assert describe_start(tok) == {"rule": "tokenizer", "ids": start, "tokens": ["<bos>"] if add_bos else []}
    text = "The quick brown fox"
    assert encode_prompt(tok, text, "plain") == start + tok(text, add_special_tokens=False).input_ids
    assert all(w[: len(start)].tolist() == start for w in pack_windows(tok, [text * 5], 8))


def test_chat_prompt_is_the_template_by_hand() -> None:
    tok = chat_tokenizer()
    by_hand = tok("<bos>user: Le chat dort.\nassistant:", add_special_tokens=False).input_ids
    assert encode_prompt(tok, "Le chat dort.", "chat") == by_hand
    assert encode_prompt(tok, "Le chat dort.") == by_hand  # auto
    assert by_hand.count(1) == 1  # the template's own BOS, not a second one from the tokenizer
    assert prompt_settings(tok)["format"] == "chat" and prompt_settings(tok, "plain")["format"] == "plain"


def test_generate_in_chat_format_matches_model_generate_on_the_template() -> None:
    model, tok = make_tiny("llama"), chat_tokenizer()
    prompts = ["Le chat dort.", "The quick brown fox jumps"]
    got = generate(model, tok, prompts, max_new_tokens=5)
    for prompt, text in zip(prompts, got):
        ids = torch.tensor([tok("<bos>user: " + prompt + "\nassistant:", add_special_tokens=False).input_ids])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                                 pad_token_id=0)
        assert text == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_continuation_nll_uses_the_chat_template() -> None:
    model, tok = make_tiny("llama"), chat_tokenizer()
    prompt, cont = "Le chat", "dort bien"
    ids = tok("<bos>user: Le chat\nassistant:", add_special_tokens=False).input_ids
    c = tok(cont, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids + c])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    expected = -sum(float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(c)) / len(c)
    assert continuation_nll(model, tok, [prompt], [cont])[0] == pytest.approx(expected, abs=1e-5)


def test_question_prompt() -> None:
    assert question_prompt("Why?", "plain") == "Q: Why?\nA:"
    assert question_prompt("Why?", "chat") == "Why?"
    with pytest.raises(LangNeuronsError, match="resolved format"):
        question_prompt("Why?", "auto")


def test_jsonl_questions(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    rows = [{"lang": "de", "question": "Warum?"}, {"lang": "de", "question": "Wie?", "split": "dev"},
            {"lang": "fr", "question": "Pourquoi ?", "split": "eval"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", "utf-8")
    assert load_questions(path) == {"de": {"eval": ["Warum?"], "dev": ["Wie?"], "all": ["Warum?", "Wie?"]},
                                    "fr": {"eval": ["Pourquoi ?"], "dev": [], "all": ["Pourquoi ?"]}}
    path.write_text('{"lang": "de", "question": "x", "split": "test"}\n', "utf-8")
    with pytest.raises(LangNeuronsError, match=r"q.jsonl:1: split 'test'"):
        load_questions(path)
    path.write_text('{"lang": "de"}\n', "utf-8")
    with pytest.raises(LangNeuronsError, match="non-empty lang and question"):
        load_questions(path)
