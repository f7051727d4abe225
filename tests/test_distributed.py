"""Work split over ranks: the helper in one process, and torchrun with 2 gloo processes writing what 1 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import SAMPLE, TINY_CONFIGS, tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

from langneurons.cli.main import main
from langneurons.core import distributed
from langneurons.core.artifacts import load_tensors, read_meta

FIX = Path(__file__).parent / "fixtures"
VOLATILE = {"date", "created", "seconds", "world_size", "versions", "generated"}  # may differ between two runs


def test_rounds_in_one_process_keep_order_and_nest():
    seen = []

    def fn(x: int) -> int:
        seen.append(distributed.map_items([1, 2], lambda y: y * 10))  # nested: runs whole, here
        return x * x

    assert [pair for done in distributed.rounds([3, 1, 2], fn) for pair in done] == [(3, 9), (1, 1), (2, 4)]
    assert seen == [[10, 20]] * 3
    assert distributed.shard(list("abc")) == list("abc") and distributed.rank_world() == (0, 1)
    t = torch.ones(3)
    distributed.all_reduce_sum([t])  # one process: unchanged
    assert torch.equal(t, torch.ones(3))


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    config = AutoConfig.for_model("llama", **{**TINY_CONFIGS["llama"], "intermediate_size": 512})
    torch.manual_seed(0)  # wide MLPs: LAPE at the calibration's neuron shares finds neurons for every language
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "texts").mkdir()
    for lang in ("en", "de", "fr"):
        (root / "texts" / f"{lang}.txt").write_text("\n\n".join(t for _ in range(6) for t in SAMPLE[lang]), "utf-8")
    common = ["--model", str(root / "model"), "--corpus", str(root / "texts"), "--quiet"]
    stats = str(root / "stats.safetensors")
    assert main(["collect", *common, "--max-tokens", "200", "--window", "16", "-o", stats]) == 0
    assert main(["identify", str(root / "stats.safetensors"), "--method", "frequency", "--per-language", "4",
                 "-o", str(root / "neurons.safetensors")]) == 0
    return root


def test_two_gloo_ranks_write_what_one_writes(root: Path):
    """collect, relevance, generate, forcing, perplexity, translation, logit lens, calibrate and compare:
    counts and texts identical, sums equal to float64 rounding."""
    driver = Path(__file__).parent / "distributed_driver.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    run = lambda cmd: subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)  # noqa: E731
    one, two = root / "one", root / "two"
    single = run([sys.executable, str(driver), str(root), str(one)])
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(_free_port())]
    split = run([*torchrun, str(driver), str(root), str(two)])
    assert split.returncode == 0, split.stderr[-3000:]
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file()) == files
    assert {f.parts[0] for f in files} >= {"stats.safetensors", "relevance.safetensors", "generate.jsonl", "forcing",
                                           "perplexity", "translation", "logit_lens", "calibration.json",
                                           "compare"}
    for rel in files:
        a, b = one / rel, two / rel
        if rel.suffix == ".safetensors":
            (ta, ma), (tb, mb) = (load_tensors(x, read_meta(x)["kind"]) for x in (a, b))
            if "collection" in ma:
                assert ma["collection"]["world_size"] == 1 and mb["collection"]["world_size"] == 2
            assert _strip(ma) == _strip(mb), rel
            for name, x in ta.items():
                if x.is_floating_point():
                    torch.testing.assert_close(x, tb[name], rtol=1e-12, atol=1e-12, msg=f"{rel}: {name}")
                else:
                    assert torch.equal(x, tb[name]), f"{rel}: {name}"
        elif rel.suffix == ".jsonl":
            rows_a = [json.loads(line) for line in a.read_text("utf-8").splitlines()]
            rows_b = [json.loads(line) for line in b.read_text("utf-8").splitlines()]
            assert rows_a and _strip(rows_a) == _strip(rows_b), rel
        elif rel.suffix == ".json":
            assert _strip(json.loads(a.read_text("utf-8"))) == _strip(json.loads(b.read_text("utf-8"))), rel
