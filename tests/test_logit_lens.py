"""Logit lens: the last layer reproduces the model's own logits, an intermediate layer equals the final norm and
head applied by hand, script classification, steering that starts at a layer, and the CLI on a tiny model."""

import json

import pytest
import torch
from tiny import SAMPLE, TINY_CONFIGS, capture, make_tiny, tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from langneurons.cli.main import main
from langneurons.core.errors import LangNeuronsError
from langneurons.core.sites import find_sites
from langneurons.identify.neurons import NeuronSet
from langneurons.steering.config import SteeringConfig
from langneurons.tasks.logit_lens import SCRIPTS, run_logit_lens, token_script

PROMPTS = {"en": ["Q: Why is the sky blue?\nA:", "The dog"], "ru": ["Собака спит.", "Q: Кто?\nA:"]}


def build(family):
    """A tiny model; Gemma with logit soft-capping, OPT with a projection after its final norm."""
    extra = {"gemma3_text": {"final_logit_softcapping": 3.0}, "opt": {"word_embed_proj_dim": 16}}.get(family)
    if extra is None:
        return make_tiny(family)
    config = AutoConfig.for_model(family, **{**TINY_CONFIGS[family], **extra})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def by_hand(model, family, hidden):
    """Final norm and LM head written out per family."""
    if family == "gpt2":
        h = model.transformer.ln_f(hidden)
    elif family == "opt":
        h = model.model.decoder.project_out(model.model.decoder.final_layer_norm(hidden))
    else:
        h = model.model.norm(hidden)
    logits = h @ model.lm_head.weight.T
    if family == "gemma3_text":
        logits = torch.tanh(logits / 3.0) * 3.0
    return torch.log_softmax(logits.double(), -1)


def check_layer(sample, logp, k):
    top = logp.topk(k)
    assert [t[0] for t in sample["top"]] == top.indices.tolist()
    assert [t[2] for t in sample["top"]] == pytest.approx(top.values.exp().tolist(), abs=1e-6)
    assert sample["entropy"] == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "opt"])
def test_layers_match_model_logits_and_hand_projection(family):
    model, tok = build(family), tiny_tokenizer()
    result = run_logit_lens(model, tok, PROMPTS, top_k=5, batch_size=3, progress=False)
    layers = find_sites(model).layers
    for lang, prompts in PROMPTS.items():
        for prompt in prompts:
            rows = {r["layer"]: r for r in result.samples if r["prompt"] == prompt and r["language"] == lang}
            assert sorted(rows) == list(range(len(layers)))
            ids = torch.tensor([tok(prompt).input_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, -1]
                first = by_hand(model, family, capture(model, [layers[0]], ids)[0][0, -1])
            check_layer(rows[len(layers) - 1], torch.log_softmax(logits.double(), -1), 5)
            check_layer(rows[0], first, 5)


def test_script_shares_count_the_top_k():
    model, tok = make_tiny("llama"), tiny_tokenizer()
    result = run_logit_lens(model, tok, PROMPTS, top_k=7, progress=False)
    for lang in PROMPTS:
        for layer, row in enumerate(result.layers["baseline"][lang]):
            samples = [r for r in result.samples if r["language"] == lang and r["layer"] == layer]
            scripts = [token_script(tok.decode([t[0]])) for r in samples for t in r["top"]]
            assert row["shares"] == pytest.approx({s: scripts.count(s) / (7 * 2) for s in SCRIPTS})
            assert row["entropy"] == pytest.approx(sum(r["entropy"] for r in samples) / 2)


@pytest.mark.parametrize(("text", "script"), [
    ("Hello", "Latin"), (" Würde", "Latin"), (" мир", "Cyrillic"), ("سلام", "Arabic"), ("नमस्ते", "Devanagari"),
    ("中文", "Han"), ("ひらがな", "Kana"), ("カタカナ", "Kana"), ("한국어", "Hangul"), ("αβγ", "other"),
    (" 42!\n", "none"), ("", "none"), ("Ab中文字", "Han"), ("\ufffd", "none"),
])
def test_token_script(text, script):
    assert token_script(text) == script


def test_steering_from_a_layer_on_leaves_earlier_layers_alone():
    model, tok = make_tiny("llama"), tiny_tokenizer()
    masks = torch.zeros(1, 2, 48, dtype=torch.bool)
    masks[0, 1, :24] = True
    neurons = NeuronSet(["ru"], masks, {"method": "hand"})
    config = SteeringConfig(deactivate={"ru": 5.0})
    result = run_logit_lens(model, tok, PROMPTS, top_k=5, steering=config, neurons=neurons, progress=False)
    base, steered = result.conditions
    assert base == "baseline" and steered == config.describe()
    for lang in PROMPTS:
        assert result.layers[steered][lang][0] == result.layers[base][lang][0]  # only layer 1 is edited
        assert result.layers[steered][lang][1]["entropy"] != result.layers[base][lang][1]["entropy"]
    with pytest.raises(LangNeuronsError, match="generated_only"):
        run_logit_lens(model, tok, PROMPTS, steering=SteeringConfig(deactivate={"ru": 0.0}, generated_only=True),
                       neurons=neurons, progress=False)
    with pytest.raises(LangNeuronsError, match="non-empty"):
        run_logit_lens(model, tok, {"en": []}, progress=False)


def test_cli(tmp_path, capsys):
    model = make_tiny("llama")
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    masks = torch.zeros(2, 2, 48, dtype=torch.bool)
    masks[:, 1, :10] = True
    NeuronSet(["en", "ru"], masks, {"method": "hand"}).save(tmp_path / "n.safetensors")
    out = tmp_path / "out"
    common = ["evaluate", "logit-lens", "--model", str(tmp_path / "model"), "--top-k", "4", "--quiet",
              "--output-dir", str(out)]
    assert main([*common, "--languages", "en,ru", "--split", "eval"]) == 0
    printed = capsys.readouterr().out
    assert "baseline: most common script of the top-4 candidates" in printed and "layer" in printed
    saved = json.loads((out / "logit_lens.json").read_text())
    assert saved["task"] == "logit-lens" and saved["summary"]["conditions"] == ["baseline"]
    assert saved["settings"]["n_prompts"] == {"en": 8, "ru": 8}
    assert (out / "logit_lens.png").exists() and (out / "logit_lens.svg").exists()
    assert len((out / "logit_lens_samples.jsonl").read_text().splitlines()) == 16 * 2
    (tmp_path / "p.json").write_text(json.dumps({"de": SAMPLE["de"]}), "utf-8")
    assert main([*common, "--prompts-file", str(tmp_path / "p.json"), "--neurons", str(tmp_path / "n.safetensors"),
                 "--steer=-ru", "--value", "2"]) == 0
    assert json.loads((out / "logit_lens.json").read_text())["summary"]["conditions"] == ["baseline", "-ru [add]"]
    assert main([*common, "--prompts-file", str(tmp_path / "p.json"), "--languages", "fr"]) == 2
    assert "no prompts for fr" in capsys.readouterr().err
