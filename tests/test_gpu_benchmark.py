"""perf/gpu.py in its CPU form (tiny shapes of both families), so that the GPU benchmark cannot rot."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "perf" / "gpu.py"


def test_gpu_benchmark_runs_small_on_the_cpu(capsys):
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--small", "--device", "cpu", "--repeats", "1", "--tokens", "768", "--prompts", "8"])
    out = capsys.readouterr().out
    for shape in ("llama-small", "gemma-small"):
        assert f"\n{shape} (" in out
    ratios = [float(x) for x in re.findall(r"collect / bare\s+([0-9.]+)", out)]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    assert len(re.findall(r"generate steered\s+[0-9]+ tok/s .* ratio [0-9.]+", out)) == 2
    # 3 sources x 3 targets x 8 built-in questions, steered and unsteered
    assert len(re.findall(r"forcing grid\s+[0-9.]+ prompts/s \(144 prompts\)", out)) == 2
