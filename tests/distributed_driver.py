"""Run every heavy command once on a tiny model: `python distributed_driver.py ROOT OUT` in one process, or under
`torchrun --nproc-per-node 2`; tests/test_distributed.py compares what the two runs write."""

from __future__ import annotations

import sys
from pathlib import Path

from langneurons.cli.main import main


def run(root: Path, out: Path) -> None:
    model = ["--model", str(root / "model"), "--quiet"]
    texts = ["--corpus", str(root / "texts")]
    steer = ["--neurons", str(root / "neurons.safetensors"), "--stats", str(root / "stats.safetensors")]
    gen = ["--max-new-tokens", "6", "--batch-size", "3", "--identifier", "script"]
    commands = [
        ["collect", *model, *texts, "--max-tokens", "150", "--window", "16", "--batch-size", "2",
         "-o", str(out / "stats.safetensors")],
        ["collect", "--relevance", *model, *texts, "--max-tokens", "60", "--window", "16", "--batch-size", "2",
         "-o", str(out / "relevance.safetensors")],
        ["generate", *model, *steer, "--steer", "-en +de", "--prompt", "The cat", "--prompt", "Der Hund",
         "--prompt", "Le chat dort", *gen, "-o", str(out / "generate.jsonl")],
        ["evaluate", "forcing", *model, *steer, "--sources", "en,de", "--targets", "de,fr", "--split", "dev", *gen,
         "--output-dir", str(out / "forcing")],
        ["evaluate", "perplexity", *model, "--neurons", str(root / "neurons.safetensors"), *texts,
         "--languages", "en,de,fr", "--heldout-every", "2", "--window", "16", "--batch-size", "2",
         "--output-dir", str(out / "perplexity")],
        ["evaluate", "translation", *model, *steer, "--pairs", "en-de,de-fr", "--n", "3", *gen,
         "--output-dir", str(out / "translation")],
        ["evaluate", "logit-lens", *model, "--languages", "en,de", "--split", "dev", "--batch-size", "2",
         "--output-dir", str(out / "logit_lens")],
        ["calibrate", *model, "--stats", str(root / "stats.safetensors"), "--targets", "de,fr", "--sources", "en,de",
         *gen, "-o", str(out / "calibration.json")],
        ["compare", *model, "--neurons", str(root / "neurons.safetensors"), "--stats", str(root / "stats.safetensors"),
         *texts, "--languages", "en,de,fr", "--heldout-every", "2", "--window", "16", "--batch-size", "2",
         "--output-dir", str(out / "compare")],
    ]
    for command in commands:
        code = main(command)
        if code != 0:
            raise SystemExit(f"{command[:2]} exited with {code}")


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
