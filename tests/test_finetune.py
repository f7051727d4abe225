"""Neuron-only fine-tuning on tiny models: only the selected slices move, NLL drops, deltas save and apply."""

import copy

import pytest
import torch
from tiny import TINY_CONFIGS, make_tiny, tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from langneurons.cli.main import main
from langneurons.core.artifacts import read_meta
from langneurons.core.errors import LangNeuronsError
from langneurons.data.corpus import from_texts
from langneurons.data.windows import pack_windows
from langneurons.identify.neurons import NeuronSet
from langneurons.tasks.finetune import FinetuneDelta, _loss_backward, apply_finetune, finetune, finetuned

N, HIDDEN = 48, 32  # tiny MLP width and hidden size (tests/tiny.py)
SELECTED = {0: [1, 5, 17, 40], 1: [0, 3, 47]}  # xx's neurons per layer
FAMILIES = ["llama", "gpt2", "phi3"]  # gated, plain with Conv1D linears and biases, fused gate_up


def toy_corpus():
    """'xx': a repetitive toy language; 'de': ordinary text. 40 documents each (train, validation, held-out)."""
    return from_texts({
        "xx": [("la li lu " * 8).strip() for _ in range(40)],
        "de": ["Alle Menschen sind frei und gleich an Würde und Rechten geboren. Der Hund schläft."] * 40,
    })


def neuron_set() -> NeuronSet:
    masks = torch.zeros(2, 2, N, dtype=torch.bool)
    for layer, idx in SELECTED.items():
        masks[0, layer, idx] = True
    masks[1, :, 20:24] = True
    return NeuronSet(["xx", "de"], masks, {"method": "hand"})


def selected(family: str, name: str, shape: torch.Size) -> torch.Tensor:
    """Which entries of parameter `name` belong to the selected neurons, written out per family by hand."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, idx in SELECTED.items():
        idx = torch.tensor(idx)
        if family == "llama":
            if name in (f"model.layers.{layer}.mlp.gate_proj.weight", f"model.layers.{layer}.mlp.up_proj.weight"):
                mask[idx, :] = True
            if name == f"model.layers.{layer}.mlp.down_proj.weight":
                mask[:, idx] = True
        elif family == "gpt2":  # Conv1D weights are [in, out]
            if name == f"transformer.h.{layer}.mlp.c_fc.weight":
                mask[:, idx] = True
            if name == f"transformer.h.{layer}.mlp.c_fc.bias":
                mask[idx] = True
            if name == f"transformer.h.{layer}.mlp.c_proj.weight":
                mask[idx, :] = True
        elif family == "phi3":  # gate_up_proj holds [gate; up] on its output rows
            if name == f"model.layers.{layer}.mlp.gate_up_proj.weight":
                mask[torch.cat([idx, idx + N]), :] = True
            if name == f"model.layers.{layer}.mlp.down_proj.weight":
                mask[:, idx] = True
    return mask


def hand_nll(model, windows: list[torch.Tensor]) -> float:
    """Mean next-token NLL, one unpadded window at a time, from the model's own logits."""
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logp = model(input_ids=w[None]).logits[0, :-1].double().log_softmax(-1)
            total -= float(logp.gather(-1, w[1:, None]).sum())
            count += len(w) - 1
    return total / count


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run(model, **kwargs) -> FinetuneDelta:
    settings = {"steps": 12, "lr": 1e-2, "batch_size": 2, "window": 32, "eval_every": 4, "progress": False,
                **kwargs}
    return finetune(model, tiny_tokenizer(), neuron_set(), "xx", toy_corpus(), **settings)


@pytest.mark.parametrize("family", FAMILIES)
def test_only_selected_slices_change(family):
    model = make_tiny(family)
    base = state(model)
    delta = run(model, weight_decay=0.1, valid_every=0)  # weight decay and momentum must not leak
    trained = dict(model.named_parameters())
    touched = set()
    for name, value in model.state_dict().items():
        mask = selected(family, name, value.shape)
        assert torch.equal(value[~mask], base[name][~mask]), name
        if mask.any():
            touched.add(name)
            assert (value[mask] != base[name][mask]).float().mean() > 0.9, name
            assert trained[name].requires_grad  # flags restored
    assert touched == {s["param"] for s in delta.meta["slices"]}
    per_neuron = 2 * HIDDEN + 1 if family == "gpt2" else 3 * HIDDEN
    n = sum(len(i) for i in SELECTED.values())
    assert delta.meta["trainable_parameters"] == delta.n_parameters == n * per_neuron
    assert delta.meta["training"]["steps"] == 12 and not model.training
    delta.undo()
    assert all(torch.equal(v, base[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_heldout_nll_goes_down_and_matches_a_hand_computation(family):
    model = make_tiny(family)
    base_model = copy.deepcopy(model)
    corpus, tok = toy_corpus(), tiny_tokenizer()
    delta = run(model, steps=40, eval_every=5)
    nll = delta.meta["nll"]
    assert list(nll["before"]) == ["xx", "de"]
    for lang in ("xx", "de"):
        heldout = list(pack_windows(tok, corpus.documents(lang, "heldout"), 32))
        assert nll["before"][lang] == pytest.approx(hand_nll(base_model, heldout), abs=1e-4)
        assert nll["after"][lang] == pytest.approx(hand_nll(model, heldout), abs=1e-4)
    drop = nll["before"]["xx"] - nll["after"]["xx"]
    assert drop > 0.3 and drop > abs(nll["before"]["de"] - nll["after"]["de"])
    # validation NLL measured through the training hooks equals the NLL of the model holding the merged slices
    train_docs = list(corpus.documents("xx", "train"))
    valid = list(pack_windows(tok, [d for i, d in enumerate(train_docs) if i % 10 == 9], 32))
    assert delta.meta["valid_nll"]["after"] == pytest.approx(hand_nll(model, valid), abs=1e-4)
    assert delta.meta["valid_nll"]["after"] < delta.meta["valid_nll"]["before"]


def test_training_loss_and_gradient_leave_padding_out():
    model = make_tiny("llama")
    windows = [torch.tensor([1, 50, 60, 70, 80, 90, 100, 110, 120, 130]), torch.tensor([1, 200, 210, 220, 230])]
    loss = _loss_backward(model, windows, pad_id=0, device=torch.device("cpu"))
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    total = 0.0  # autograd through the model's own logits, one unpadded window at a time
    for w in windows:
        logp = model(input_ids=w[None]).logits[0, :-1].log_softmax(-1)
        total = total - logp.gather(-1, w[1:, None]).sum()
    (total / 13).backward()
    assert loss == pytest.approx(float(total.detach()) / 13, abs=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(grads[name], p.grad, atol=1e-6), name


def test_save_apply_undo(tmp_path):
    model = make_tiny("llama")
    fresh = make_tiny("llama")
    base = state(fresh)
    delta = run(model)
    delta.save(tmp_path / "delta.safetensors")
    meta = read_meta(tmp_path / "delta.safetensors", "finetune")
    assert meta["language"] == "xx" and meta["model"]["id"] == "unnamed-llama"
    assert meta["neurons"]["per_layer"] == [4, 3] and meta["neurons"]["method"] == "hand"
    assert set(meta["nll"]["after"]) == {"xx", "de"} and meta["settings"]["lr"] == 1e-2
    loaded = apply_finetune(fresh, tmp_path / "delta.safetensors")
    assert loaded.n_parameters == delta.n_parameters
    trained = model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())
    loaded.undo()
    assert all(torch.equal(v, base[k]) for k, v in fresh.state_dict().items())
    with finetuned(fresh, tmp_path / "delta.safetensors"):
        assert all(torch.equal(v, trained[k]) for k, v in fresh.state_dict().items())
    assert all(torch.equal(v, base[k]) for k, v in fresh.state_dict().items())


def test_delta_on_another_model_is_a_one_line_error(tmp_path):
    delta = run(make_tiny("llama"), steps=2)
    wider = AutoModelForCausalLM.from_config(
        AutoConfig.for_model("llama", **{**TINY_CONFIGS["llama"], "intermediate_size": 64}))
    for other, words in ((make_tiny("gpt2"), "does not fit"), (wider, "does not fit")):
        before = state(other)
        with pytest.raises(LangNeuronsError, match=words) as e:
            apply_finetune(other, delta)
        assert "\n" not in str(e.value)
        assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    renamed = make_tiny("llama")
    renamed.langneurons_id = "someone/else"
    with pytest.raises(LangNeuronsError, match="not someone/else"):
        apply_finetune(renamed, delta)
    apply_finetune(renamed, delta, check_id=False)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(LangNeuronsError, match="not a readable safetensors"):
        apply_finetune(renamed, tmp_path / "bad.safetensors")


def test_early_stopping_keeps_the_best_state():
    # train on the toy language, validate on German documents: validation stops improving early
    german = "Alle Menschen sind frei und gleich an Würde. Der Hund schläft."
    docs, n_train = [], 0
    for i in range(40):
        if i % 10 == 9:  # held out by the corpus
            docs.append("la li lu")
        else:  # every 10th training document validates
            docs.append(german if n_train % 10 == 9 else ("la li lu " * 8).strip())
            n_train += 1
    corpus = from_texts({"xx": docs, "de": [german] * 40})
    model = make_tiny("llama")
    delta = finetune(model, tiny_tokenizer(), neuron_set(), "xx", corpus, steps=100, lr=1.0, batch_size=2,
                     window=32, eval_every=2, patience=2, progress=False)
    info, history = delta.meta["training"], [h["valid_nll"] for h in delta.meta["history"]]
    assert info["stopped"] == "patience" and info["steps"] == info["best_step"] + 2 * 2 < 100
    assert len(history) == info["steps"] // 2
    assert delta.meta["valid_nll"]["after"] == min([delta.meta["valid_nll"]["before"], *history])
    valid = list(pack_windows(tiny_tokenizer(), [german] * 3, 32))
    assert hand_nll(model, valid) == pytest.approx(delta.meta["valid_nll"]["after"], abs=1e-4)


def test_bad_input():
    model, tok, corpus = make_tiny("llama"), tiny_tokenizer(), toy_corpus()
    empty = NeuronSet(["xx", "de"], torch.zeros(2, 2, N, dtype=torch.bool))
    with pytest.raises(LangNeuronsError, match="no neurons"):
        finetune(model, tok, empty, "xx", corpus)
    with pytest.raises(LangNeuronsError, match="no 'de' text"):
        finetune(model, tok, neuron_set(), "de", from_texts({"xx": ["la li"] * 20}))
    with pytest.raises(LangNeuronsError, match="steps must be positive"):
        finetune(model, tok, neuron_set(), "xx", corpus, steps=0)
    with pytest.raises(LangNeuronsError, match="does not fit"):
        finetune(make_tiny("gpt2"), tok, NeuronSet(["xx"], torch.ones(1, 3, N, dtype=torch.bool)), "xx", corpus)


def test_cli_finetune_and_apply_delta(tmp_path, capsys):
    make_tiny("llama").save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "texts").mkdir()
    for lang, docs in toy_corpus().sources.items():
        (tmp_path / "texts" / f"{lang}.txt").write_text("\n\n".join(docs()), "utf-8")
    neuron_set().save(tmp_path / "neurons.safetensors")
    delta_file = tmp_path / "delta.safetensors"
    assert main(["finetune", "--model", str(tmp_path / "model"), "--neurons", str(tmp_path / "neurons.safetensors"),
                 "--language", "xx", "--corpus", str(tmp_path / "texts"), "--steps", "6", "--lr", "1e-2",
                 "--window", "32", "--eval-every", "3", "--quiet", "-o", str(delta_file)]) == 0
    out = capsys.readouterr().out
    assert "nll_before" in out and "trained parameters" in out
    meta = read_meta(delta_file, "finetune")
    assert meta["neurons"]["source"] == str(tmp_path / "neurons.safetensors") and meta["training"]["steps"] == 6
    assert main(["apply-delta", str(delta_file), "--model", str(tmp_path / "model"), "-o",
                 str(tmp_path / "tuned")]) == 0
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "tuned")
    expected = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    expected.langneurons_id = meta["model"]["id"]
    apply_finetune(expected, delta_file)
    assert all(torch.equal(v, tuned.state_dict()[k]) for k, v in expected.state_dict().items())
    assert main(["apply-delta", str(delta_file), "--model", str(tmp_path / "model"), "-o",
                 str(tmp_path / "tuned")]) == 2
    assert "exists" in capsys.readouterr().err
