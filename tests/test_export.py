"""Export to lm-evaluation-harness's `steered` model: the harness, reading our file, scores like our own steering
of the setting's additive part; what cannot be expressed is dropped with a warning, or refused."""

from __future__ import annotations

import json

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.hf_steered import SteeredModel
from tiny import make_tiny, tiny_tokenizer
from transformers import AutoModelForCausalLM

import langneurons as ln
from langneurons.core.errors import LangNeuronsError
from langneurons.stats.activation import ActivationStats
from langneurons.steering.edits import build_steering
from langneurons.steering.export import export_steering, lm_eval_steer_vectors
from langneurons.tasks.harness import lm_eval_model

LANGS = ["en", "de", "fr"]
PAIRS = [("The quick brown fox", " jumps over the lazy dog."), ("Der Hund", " schläft."), ("Le chat", " dort.")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_tiny("llama", dtype=torch.float64).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    model = AutoModelForCausalLM.from_pretrained(root / "model", dtype=torch.float64).eval()
    g = torch.Generator().manual_seed(3)
    neurons = ln.NeuronSet(LANGS, torch.rand(len(LANGS), 2, 48, generator=g) < 0.25, {"method": "hand-made"})
    hidden = torch.randn(len(LANGS), 2, 32, generator=g, dtype=torch.float64) * 100
    stats = ActivationStats(LANGS, torch.full((len(LANGS),), 100), torch.randint(0, 100, (len(LANGS), 2, 48),
                            generator=g), torch.randn(len(LANGS), 2, 48, generator=g, dtype=torch.float64) * 40,
                            None, {}, hidden)
    return root, model, neurons, stats


def scores(lm) -> list[float]:
    return [r[0] for r in lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(PAIRS)],
                                           disable_tqdm=True)]


@pytest.mark.parametrize(("expression", "method", "additive"), [
    ("+3*de", "add", "+3*de"), ("-en +2*fr", "diffmean", "+2*fr"), ("+de", "residual", "+de")])
def test_the_harness_reading_our_file_scores_like_our_additive_steering(saved, tmp_path, expression, method,
                                                                         additive):
    root, model, neurons, stats = saved
    steering = build_steering(model, neurons, stats, expression, method=method)
    if additive != expression:
        with pytest.warns(UserWarning, match="drops deactivation of en"):
            info = export_steering(steering, tmp_path / "steer.pt")
    else:
        info = export_steering(steering, tmp_path / "steer.pt")
    theirs = scores(SteeredModel(pretrained=str(root / "model"), steer_path=str(tmp_path / "steer.pt"), device="cpu",
                                 dtype="float64", batch_size=2))
    ours = scores(lm_eval_model(model, tiny_tokenizer(), additive, neurons=neurons, stats=stats, method=method))
    plain = scores(lm_eval_model(model, tiny_tokenizer()))
    assert theirs == pytest.approx(ours, abs=1e-8)
    assert max(abs(a - b) for a, b in zip(ours, plain)) > 1e-3  # the exported steering acts
    site = "layers.{}" if method == "residual" else "layers.{}.mlp.act_fn"
    assert info["hookpoints"] == [site.format(i) for i in range(2)]  # one per layer, each its own vector
    assert json.loads((tmp_path / "steer.pt.json").read_text("utf-8"))["setting"]["method"] == method
    assert torch.load(tmp_path / "steer.pt", weights_only=True).keys() == set(info["hookpoints"])


def test_what_has_no_vector_is_refused(saved, tmp_path):
    _, model, neurons, stats = saved
    for expression, method in (("+de", "replace"), ("+de", "scale"), ("-en", "add")):
        with pytest.raises(LangNeuronsError, match="has no additive part"):
            lm_eval_steer_vectors(build_steering(model, neurons, stats, expression, method=method))
    with pytest.raises(LangNeuronsError, match=r"name the output \*\.pt"):
        export_steering(build_steering(model, neurons, stats, "+de"), tmp_path / "steer.json")


def test_cli_export(saved, tmp_path, capsys):
    from langneurons.cli.main import main

    root, _, neurons, stats = saved
    neurons.save(tmp_path / "n.safetensors")
    stats.save(tmp_path / "s.safetensors")
    assert main(["export", "--format", "lm-eval-steer", "--model", str(root / "model"), "--neurons",
                     str(tmp_path / "n.safetensors"), "--stats", str(tmp_path / "s.safetensors"),
                 "--steer", "-en +de", "-o", str(tmp_path / "de.pt")]) == 0
    out, err = capsys.readouterr()
    assert "langneurons: warning: lm-eval-steer export drops deactivation" in err
    assert "dropped: deactivation of en (set)" in out and (tmp_path / "de.pt").exists()
    assert main(["export", "--model", str(root / "model"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "--steer '+de' or --setting FILE" in capsys.readouterr().err
