"""Export a steering setting for other tools: lm-evaluation-harness's `steered` model (`--format lm-eval-steer`).

The harness's steered model adds a fixed vector to a module's output at every position (`action: "add"`). That is
exactly the additive part of a setting: activation by `add` or `diffmean` (a shift of the neuron activations, at
each layer's activation module) and `residual` (a shift of each decoder layer's output). Everything else has no
vector form there and is dropped with a warning: deactivation (set to a value, or scaled), and the edits that
multiply (`scale`) or overwrite (`replace`), which make a setting without an additive part an error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from langneurons.core.artifacts import write_atomic, write_json
from langneurons.core.errors import LangNeuronsError, warn
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import Steering

FORMATS = ("lm-eval-steer",)
ADDITIVE = ("add", "diffmean", "residual")


def lm_eval_steer_vectors(steering: Steering) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The harness's steer config of `steering`'s additive part (hookpoint, relative to `model.base_model`, ->
    {"action": "add", "steering_vector", "steering_coefficient": 1.0, "bias": None, "head_index": None}) and a
    list of what was dropped."""
    config = steering.config
    dropped = []
    if config.deactivate:
        dropped.append(f"deactivation of {', '.join(config.deactivate)} ({config.deactivation})")
    if config.generated_only:
        dropped.append("generated_only (the harness edits prompt tokens too)")
    if config.method not in ADDITIVE or not config.activate:
        raise LangNeuronsError(f"method '{config.method}' has no additive part (only {', '.join(ADDITIVE)} add a "
                               "vector); the harness's steered model cannot express it")
    additive = SteeringConfig(dict(config.activate), {}, config.method, layers=config.layers)
    part = Steering(steering.model, steering.neurons, steering.stats, additive)
    names = {id(m): name for name, m in steering.model.base_model.named_modules()}
    out: dict[str, dict[str, Any]] = {}
    for layer, (scale, shift) in part.tables.items():
        assert bool((scale == 1).all()), "add/diffmean compile to pure shifts"
        out[names[id(part.sites.acts[layer])]] = _entry(shift)
    for layer, delta in part.residual.items():
        out[names[id(part.sites.layers[layer])]] = _entry(delta)
    return out, dropped


def _entry(vector: torch.Tensor) -> dict[str, Any]:
    return {"action": "add", "steering_vector": vector.detach().float().cpu().clone(), "steering_coefficient": 1.0,
            "bias": None, "head_index": None}


def export_steering(steering: Steering, path: str | Path, fmt: str = "lm-eval-steer") -> dict[str, Any]:
    """Write `steering` in format `fmt` (a `.pt` file for the harness plus `<file>.json` saying what it keeps and
    drops); warns about what was dropped. Returns the JSON description."""
    if fmt not in FORMATS:
        raise LangNeuronsError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise LangNeuronsError(f"{path}: the harness reads steering files named *.pt; name the output *.pt")
    vectors, dropped = lm_eval_steer_vectors(steering)
    for what in dropped:
        warn(f"lm-eval-steer export drops {what}")
    write_atomic(path, lambda p: torch.save(vectors, p))
    from langneurons.core.models import model_id

    info = {"kind": "steering export", "format": fmt, "model": model_id(steering.model),
            "setting": steering.config.to_dict(), "kept": f"additive part ({steering.config.method}) at "
            f"{len(vectors)} hookpoints", "dropped": dropped, "hookpoints": list(vectors),
            "use": f"lm_eval --model steered --model_args pretrained=MODEL,steer_path={path.name} --tasks ..."}
    write_json(path.with_name(path.name + ".json"), info)
    return json.loads(json.dumps(info))
