"""Where the neurons are: one declarative entry per architecture family, validated against the module tree.

A neuron is one channel of the MLP's intermediate activation after the nonlinearity and before anything
multiplies it: the output of `act_fn` in `down_proj(act_fn(gate_proj(x)) * up_proj(x))` (gated MLPs) or of
`act` in `fc_out(act(fc_in(x)))` (plain MLPs). Hooking that activation module's output reads the neuron
values, and replacing its output edits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from langneurons.core.errors import LangNeuronsError
from langneurons.core.hooks import Hooks
from langneurons.core.lm import decoder_body, embedding_weight

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class SiteSpec:
    """Where the neurons of one architecture family live (paths are dotted module names)."""

    layers: tuple[str, ...]  # candidate paths, from the model root, to the ModuleList of decoder layers
    act: str  # inside a layer: the activation module whose output is the neuron value
    up: tuple[str, ...]  # inside a layer: the linear(s) whose output rows make the neurons (gate first)
    down: str  # inside a layer: the linear that reads the neurons
    gated: bool
    fused_gate_up: bool = False  # one linear holds [gate; up] stacked on the output dimension (Phi-3, GLM)
    flat_tokens: bool = False  # the MLP sees [batch * seq, hidden], not [batch, seq, hidden] (OPT)


def _gated(act: str = "mlp.act_fn", gate: str = "mlp.gate_proj", up: str = "mlp.up_proj",
           down: str = "mlp.down_proj", layers: tuple[str, ...] = ("model.layers",)) -> SiteSpec:
    """`down(act(gate(x)) * up(x))`."""
    return SiteSpec(layers=layers, act=act, up=(gate, up), down=down, gated=True)


def _fused(act: str = "mlp.activation_fn", gate_up: str = "mlp.gate_up_proj", down: str = "mlp.down_proj",
           layers: tuple[str, ...] = ("model.layers",)) -> SiteSpec:
    """`gate, up = gate_up(x).chunk(2); down(up * act(gate))`."""
    return SiteSpec(layers=layers, act=act, up=(gate_up,), down=down, gated=True, fused_gate_up=True)


def _plain(layers: str, mlp: str, act: str, fc_in: str, fc_out: str, flat_tokens: bool = False) -> SiteSpec:
    """`fc_out(act(fc_in(x)))`; `mlp` is the layer's MLP submodule ("" when the layer holds the linears)."""
    pre = f"{mlp}." if mlp else ""
    return SiteSpec(layers=(layers,), act=pre + act, up=(pre + fc_in,), down=pre + fc_out, gated=False,
                    flat_tokens=flat_tokens)


# Each entry was checked against the MLP and decoder-layer source of transformers 5.x
# (models/<type>/modeling_<type>.py): the activation module is applied once per layer, to the output of the
# first `up` linear only, and its output (times the `up` output in gated MLPs) is exactly what `down` reads.
# tests/test_sites.py checks each one numerically on a tiny model.
REGISTRY: dict[str, SiteSpec] = {
    # gated, Llama layout: mlp.{gate_proj, up_proj, act_fn, down_proj}
    **{
        name: _gated()
        for name in (
            "llama", "mistral", "ministral", "ministral3", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
            "vaultgemma", "olmo", "olmo2", "olmo3", "cohere", "cohere2", "granite", "stablelm", "smollm3",
            "helium", "exaone4", "seed_oss", "ernie4_5", "hunyuan_v1_dense",
        )
    },
    # Gemma3ForConditionalGeneration (multimodal): the text decoder's layers; the SigLIP tower is not searched
    "gemma3": _gated(layers=("model.language_model.layers", "language_model.model.layers", "model.layers")),
    # gated with one fused [gate; up] linear
    "phi3": _fused(),
    "glm": _fused(),
    "glm4": _fused(),
    # plain, Llama layout without a gate: down_proj(act_fn(up_proj(x))) (ReLU^2 or xIELU)
    **{name: _plain("model.layers", "mlp", "act_fn", "up_proj", "down_proj")
       for name in ("arcee", "nemotron", "jais2", "apertus")},
    "phi": _plain("model.layers", "mlp", "activation_fn", "fc1", "fc2"),
    "nanochat": _plain("model.layers", "mlp", "activation_fn", "fc1", "fc2"),
    "starcoder2": _plain("model.layers", "mlp", "act", "c_fc", "c_proj"),
    "persimmon": _plain("model.layers", "mlp", "act", "dense_h_to_4h", "dense_4h_to_h"),
    "gpt2": _plain("transformer.h", "mlp", "act", "c_fc", "c_proj"),  # Conv1D linears (weight is [in, out])
    "gpt_bigcode": _plain("transformer.h", "mlp", "act", "c_fc", "c_proj"),
    "gpt_neo": _plain("transformer.h", "mlp", "act", "c_fc", "c_proj"),
    "gptj": _plain("transformer.h", "mlp", "act", "fc_in", "fc_out"),
    "codegen": _plain("transformer.h", "mlp", "act", "fc_in", "fc_out"),
    "gpt_neox": _plain("gpt_neox.layers", "mlp", "act", "dense_h_to_4h", "dense_4h_to_h"),
    "bloom": _plain("transformer.h", "mlp", "gelu_impl", "dense_h_to_4h", "dense_4h_to_h"),
    "falcon": _plain("transformer.h", "mlp", "act", "dense_h_to_4h", "dense_4h_to_h"),
    "mpt": _plain("transformer.blocks", "ffn", "act", "up_proj", "down_proj"),
    # the decoder layer holds fc1 / activation_fn / fc2 itself
    "opt": _plain("model.decoder.layers", "", "activation_fn", "fc1", "fc2", flat_tokens=True),
    "xglm": _plain("model.layers", "", "activation_fn", "fc1", "fc2"),
}


@dataclass
class NeuronSites:
    """The neuron sites of one loaded model: one activation module (and its linears) per decoder layer."""

    model_type: str
    spec: SiteSpec
    layers_path: str
    acts: list[nn.Module]
    ups: list[tuple[nn.Module, ...]]
    downs: list[nn.Module]
    layers: list[nn.Module]  # the decoder layers (their outputs are the residual stream)

    @property
    def n_layers(self) -> int:
        return len(self.acts)

    @property
    def n_neurons(self) -> int:
        return _in_features(self.downs[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_layers, self.n_neurons)

    def describe(self) -> dict[str, object]:
        """What goes into artifact metadata: enough to tell whether an artifact fits a model."""
        return {
            "model_type": self.model_type,
            "layers": self.layers_path,
            "act": self.spec.act,
            "n_layers": self.n_layers,
            "n_neurons": self.n_neurons,
            "gated": self.spec.gated,
        }


def _in_features(module: nn.Module) -> int:
    """Input width of a linear layer (nn.Linear, or GPT-2's transposed Conv1D)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 2 and hasattr(module, "nf"):  # transformers' Conv1D
        return int(weight.shape[0])
    raise LangNeuronsError(
        f"cannot read the input width of {type(module).__name__}; it is not a linear layer"
    )


def _get(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def model_type(model: PreTrainedModel) -> str:
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "model_type", None):
        raise LangNeuronsError(
            f"{type(model).__name__} has no config.model_type; pass a Hugging Face transformers model"
        )
    return str(config.model_type)


def _layer_paths(model: PreTrainedModel, spec: SiteSpec) -> list[str]:
    """The registry's layer paths, and the same paths inside a bare base model (AutoModel)."""
    paths = list(spec.layers)
    head = getattr(model, "get_output_embeddings", None)
    if head is not None and head() is None:  # a bare base model: the paths below the LM's body attribute
        # (not read from `base_model_prefix`, which names no attribute in some transformers 4 classes: Gemma 3)
        paths += [p.split(".", 1)[1] for p in spec.layers if "." in p and p.split(".", 1)[1] not in paths]
    return paths


def find_sites(model: PreTrainedModel) -> NeuronSites:
    """Locate the neuron sites of `model` from its config and module tree (never from its name)."""
    mtype = model_type(model)
    spec = REGISTRY.get(mtype)
    if spec is None:
        raise LangNeuronsError(
            f"model type '{mtype}' has no known neuron site; supported: {', '.join(sorted(REGISTRY))}. "
            "Add an entry to langneurons.core.sites.REGISTRY"
        )
    paths = _layer_paths(model, spec)
    for path in paths:
        layers = _get(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            layers_path = path
            break
    else:
        raise LangNeuronsError(
            f"'{mtype}' model ({type(model).__name__}) has no decoder layer list at {' or '.join(paths)}; "
            "load it with AutoModelForCausalLM"
        )
    acts: list[nn.Module] = []
    ups: list[tuple[nn.Module, ...]] = []
    downs: list[nn.Module] = []
    for i, layer in enumerate(layers):
        names = (spec.act, *spec.up, spec.down)
        found = [_get(layer, name) for name in names]
        missing = [f"{layers_path}.{i}.{n}" for n, m in zip(names, found, strict=True) if m is None]
        if missing:
            raise LangNeuronsError(
                f"'{mtype}' model lacks the neuron site module(s) {', '.join(missing)}; "
                "the registry entry does not match this model"
            )
        present = [m for m in found if m is not None]  # all of them (none is missing)
        acts.append(present[0])
        ups.append(tuple(present[1:-1]))
        downs.append(present[-1])
    if len({id(a) for a in acts}) != len(acts):
        raise LangNeuronsError(f"'{mtype}' model shares one activation module between layers; cannot hook it")
    sites = NeuronSites(mtype, spec, layers_path, acts, ups, downs, list(layers))
    widths = {_in_features(d) for d in downs}
    if len(widths) != 1:
        raise LangNeuronsError(
            f"'{mtype}' layers have MLPs of different widths {sorted(widths)}; not supported"
        )
    return sites


def _close(a: object, b: object) -> bool:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    wide = (torch.float32, torch.float64)
    tol = 1e-4 if a.dtype in wide and b.dtype in wide else 2e-2
    a, b = a.float(), b.float().to(a.device)
    return bool(torch.allclose(a, b, rtol=tol, atol=tol * max(1.0, float(b.abs().max()))))


@torch.no_grad()
def validate_sites(model: PreTrainedModel, sites: NeuronSites) -> None:
    """Run two tokens through the model and check the sites against what the MLPs really compute.

    Per layer: the activation module is called exactly once, in layer order, with output width `n_neurons`;
    its input is the output of the first `up` linear (the gate half of a fused [gate; up] linear); and the
    `down` linear reads exactly its output (times the `up` output in gated MLPs). The model runs in eval mode
    (dropout off) and each module's training flag is restored afterwards.
    """
    spec, n = sites.spec, sites.n_layers
    order: list[int] = []
    act_in: list[list[object]] = [[] for _ in range(n)]
    act_out: list[list[object]] = [[] for _ in range(n)]
    gate_out: list[list[torch.Tensor]] = [[] for _ in range(n)]
    up_out: list[list[torch.Tensor]] = [[] for _ in range(n)]
    down_in: list[list[object]] = [[] for _ in range(n)]

    def on_act(i: int):
        def keep(out: object) -> None:
            order.append(i)
            act_out[i].append(out)

        return keep

    modes = [(m, m.training) for m in model.modules()]
    device = embedding_weight(model).device
    with Hooks(sites) as hooks:
        for i in range(n):
            hooks.read(sites.acts[i], act_in[i].append, input=True)
            hooks.read(sites.acts[i], on_act(i), whole=True)
            hooks.read(sites.ups[i][0], gate_out[i].append)
            if len(sites.ups[i]) > 1:
                hooks.read(sites.ups[i][1], up_out[i].append)
            hooks.read(sites.downs[i], down_in[i].append, input=True)
        model.eval()
        try:
            decoder_body(model)(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device), use_cache=False)
        finally:
            for m, mode in modes:
                m.training = mode

    name = f"'{sites.model_type}'"
    if order != list(range(n)):
        raise LangNeuronsError(
            f"{name} activation modules ({sites.layers_path}.*.{spec.act}) were called in layer order "
            f"{order[:8]}{'...' if len(order) > 8 else ''}, expected each of the {n} layers once in order; "
            "the registry entry does not match this model"
        )
    for i in range(n):
        where = f"{sites.layers_path}.{i}"
        a_in, a_out = act_in[i][0], act_out[i][0]
        if not isinstance(a_out, torch.Tensor) or a_out.shape[-1] != sites.n_neurons:
            width = a_out.shape[-1] if isinstance(a_out, torch.Tensor) else type(a_out).__name__
            raise LangNeuronsError(
                f"{name} activation output at {where}.{spec.act} has width {width}, "
                f"expected {sites.n_neurons}; the registry entry does not match this model"
            )
        linears: list[tuple[str, list[Any]]] = [(spec.up[0], gate_out[i]), (spec.down, down_in[i])]
        if len(spec.up) > 1:
            linears.append((spec.up[1], up_out[i]))
        for path, calls in linears:
            if len(calls) != 1:
                raise LangNeuronsError(
                    f"{name} linear {where}.{path} was called {len(calls)} times in one forward, "
                    "expected once; the registry entry does not match this model"
                )
        gate, up = gate_out[i][0], (up_out[i][0] if up_out[i] else None)
        if spec.fused_gate_up:
            gate, up = gate.chunk(2, dim=-1)
        if not _close(a_in, gate):
            raise LangNeuronsError(
                f"{name} activation {where}.{spec.act} does not act on the output of {where}.{spec.up[0]}"
                f"{' (gate half)' if spec.fused_gate_up else ''}; "
                "the registry entry does not match this model"
            )
        if spec.gated:
            assert up is not None, "a gated MLP has an up linear (its calls were counted above)"
            expected = a_out * up
        else:
            expected = a_out
        if not _close(down_in[i][0], expected):
            up_name = "the up half" if spec.fused_gate_up else spec.up[-1]
            read = f"{spec.act} * {up_name}" if spec.gated else spec.act
            raise LangNeuronsError(
                f"{name} down projection {where}.{spec.down} does not read {read}; "
                "the registry entry does not match this model"
            )
