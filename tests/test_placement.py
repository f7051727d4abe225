"""Model placement: --dtype, --device and --device-map on every command that loads a model, checked before
loading, and recorded in artifacts."""

from __future__ import annotations

import argparse

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.cli.main import build_parser
from langneurons.core.errors import LangNeuronsError
from langneurons.core.models import model_placement, resolve_dtype, resolve_placement


def _loading_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict:
    """Every (sub)command's parser that has --model, by command path."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.update(_loading_parsers(sub, (*prefix, name)))
    if any("--model" in a.option_strings for a in parser._actions):
        out[prefix] = parser
    return out


def test_every_command_that_loads_a_model_takes_dtype_and_device_map():
    parsers = _loading_parsers(build_parser())
    assert {("collect",), ("generate",), ("calibrate",), ("compare",), ("evaluate", "forcing"),
            ("evaluate", "perplexity"), ("evaluate", "lm-eval"), ("finetune",), ("apply-delta",)} <= set(parsers)
    for command, parser in parsers.items():
        if command == ("demo",):
            continue  # the demo runs its model with the defaults
        options = {o: a for a in parser._actions for o in a.option_strings}
        assert {"--dtype", "--device", "--device-map"} <= set(options), command
        assert {"auto", "float32", "bfloat16", "float16"} <= set(options["--dtype"].choices), command
        assert options["--dtype"].default == ("float32" if command == ("finetune",) else "auto"), command


def test_auto_dtype_and_placement_on_this_machine():
    assert resolve_dtype("auto", on_cuda=False) == torch.float32
    assert resolve_dtype(None) == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_placement(None, None) is None  # the CPU: from_pretrained's own default
        with pytest.raises(LangNeuronsError, match="spreads a model over GPUs and none is available"):
            resolve_placement(None, "balanced")
        with pytest.raises(LangNeuronsError, match="CUDA is not available"):
            resolve_placement("cuda:0", None)
    with pytest.raises(LangNeuronsError, match="unknown device 'gpu7'"):
        resolve_placement("gpu7", None)
    with pytest.raises(LangNeuronsError, match="either device or device_map"):
        resolve_placement("cpu", "auto")


def test_dtype_and_devices_are_recorded_in_statistics():
    model, tok = make_tiny("llama", dtype=torch.bfloat16), tiny_tokenizer()
    assert model_placement(model) == {"dtype": "bfloat16", "devices": ["cpu"]}
    corpus = ln.from_texts({"en": SAMPLE["en"]}, heldout_every=0)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=20, window=12, progress=False)
    assert stats.meta["collection"]["dtype"] == "bfloat16" and stats.meta["collection"]["devices"] == ["cpu"]
