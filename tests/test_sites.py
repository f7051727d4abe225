"""Neuron sites of every registry family, checked on tiny random models against hand computations.

For each family: `find_sites` + `validate_sites` pass; the hooked activation output equals the activation
applied by hand (torch functional ops chosen here, per family) to the gate / fc_in output computed from the
layer's own weights; the down projection reads exactly that value (times `up` in gated MLPs); and zeroing
neurons through a hook on the activation gives the same logits as zeroing the matching inputs of the down
projection's weight.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import transformers
from tiny import TINY_CONFIGS, make_tiny
from transformers import AutoConfig, AutoModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.pytorch_utils import Conv1D

from langneurons.core.errors import LangNeuronsError
from langneurons.core.sites import REGISTRY, NeuronSites, find_sites, validate_sites

FAMILIES = sorted(REGISTRY)

# The nonlinearity of each family (read from its modeling/config source), written out by hand below.
ACT = {
    **{t: "silu" for t in (
        "llama", "mistral", "ministral", "ministral3", "qwen2", "qwen3", "olmo", "olmo2", "olmo3", "cohere",
        "cohere2", "granite", "stablelm", "smollm3", "helium", "exaone4", "seed_oss", "ernie4_5",
        "hunyuan_v1_dense", "phi3", "glm", "glm4",
    )},
    **{t: "gelu_tanh" for t in (
        "gemma", "gemma2", "gemma3_text", "gemma3", "vaultgemma", "starcoder2", "gpt_bigcode",
        "gpt2", "gptj", "codegen", "gpt_neo", "phi", "bloom",  # gelu_new / BLOOM's own: the same tanh formula
    )},
    **{t: "gelu" for t in ("gpt_neox", "falcon", "mpt", "xglm")},
    **{t: "relu2" for t in ("arcee", "nemotron", "jais2", "nanochat", "persimmon")},
    "opt": "relu",
    "apertus": "xielu",
}
WIDTH = {"bloom": 128, "mpt": 128}  # no MLP width field: 4 * hidden; all other tiny configs use 48
ZEROED = (0, 7, -1)
TOL = {"atol": 1e-5, "rtol": 1e-5}  # neurons zeroed in every layer by the intervention test


def _xielu(x: torch.Tensor, m: torch.nn.Module) -> torch.Tensor:
    """xIELU (Apertus) from the module's own parameters."""
    alpha_p = F.softplus(m.alpha_p)
    alpha_n = m.beta + F.softplus(m.alpha_n)
    neg = (torch.expm1(torch.minimum(x, m.eps)) - x) * alpha_n + m.beta * x
    return torch.where(x > 0, alpha_p * x * x + m.beta * x, neg)


BY_HAND = {
    "silu": lambda x, _m: x * torch.sigmoid(x),
    "gelu_tanh": lambda x, _m: F.gelu(x, approximate="tanh"),
    "gelu": lambda x, _m: F.gelu(x, approximate="none"),
    "relu": lambda x, _m: F.relu(x),
    "relu2": lambda x, _m: F.relu(x).square(),
    "xielu": _xielu,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Forwards of tiny models are dominated by thread overhead: one thread is 2-3x faster on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.cache
def tiny(family: str):
    """One tiny model per family for the whole file; tests that edit weights restore them."""
    return make_tiny(family)


@functools.cache
def tiny_sites(family: str) -> NeuronSites:
    return find_sites(tiny(family))


def _ids(seed: int = 0) -> torch.Tensor:
    # ids 3..289: no BOS/EOS/PAD and none of the tiny Gemma3's image tokens (297-299)
    return torch.randint(3, 290, (2, 6), generator=torch.Generator().manual_seed(seed))


def _linear(x: torch.Tensor, lin: torch.nn.Module) -> torch.Tensor:
    """The linear map by hand: nn.Linear keeps weight as [out, in], transformers' Conv1D as [in, out]."""
    w = lin.weight if isinstance(lin, Conv1D) else lin.weight.T
    y = x @ w
    return y if lin.bias is None else y + lin.bias


def test_registry_covers_exactly_the_tiny_families():
    assert set(REGISTRY) == set(TINY_CONFIGS) == set(ACT)


def test_transformers_knows_every_registered_family():
    unknown = [t for t in REGISTRY if t not in CONFIG_MAPPING]
    if unknown and int(transformers.__version__.split(".")[0]) < 5:  # `make test-oldest`: families added later
        pytest.skip(f"transformers {transformers.__version__} predates {', '.join(sorted(unknown))}")
    assert not unknown


@pytest.mark.parametrize("family", FAMILIES)
def test_find_and_validate(family):
    model = tiny(family)
    sites = tiny_sites(family)
    validate_sites(model, sites)
    assert sites.model_type == family
    assert sites.shape == (2, WIDTH.get(family, 48))
    assert len(sites.ups) == len(sites.downs) == 2
    assert len(sites.ups[0]) == (2 if sites.spec.gated and not sites.spec.fused_gate_up else 1)
    names = {id(m): n for n, m in model.named_modules()}
    assert all(id(a) in names and names[id(a)].startswith(sites.layers_path + ".") for a in sites.acts)
    d = sites.describe()
    assert d["model_type"] == family and d["n_layers"] == 2 and d["n_neurons"] == sites.n_neurons
    assert d["gated"] == sites.spec.gated and d["layers"] == sites.layers_path


@contextlib.contextmanager
def _wide_gates(model, sites: NeuronSites, ids: torch.Tensor, target: float = 4.0):
    """Scale each layer's first up/gate linear so that its outputs reach about +-`target`, then restore it.

    Randomly initialised tiny models have pre-activations of about 0.3 (0.03 in OLMo-2/3), where SiLU, the two
    GELUs and the others differ by less than the tolerance; at a few units they differ by far more.
    """
    lins = [ups[0] for ups in sites.ups]
    saved = [(lin.weight.detach().clone(), None if lin.bias is None else lin.bias.detach().clone())
             for lin in lins]
    try:
        for lin in lins:
            x: list[torch.Tensor] = []
            h = lin.register_forward_pre_hook(lambda _m, a, x=x: x.append(a[0]))
            try:
                model(input_ids=ids)
            finally:
                h.remove()
            k = target / float(_linear(x[0], lin).abs().max())
            lin.weight.mul_(k)
            if lin.bias is not None:
                lin.bias.mul_(k)
        yield
    finally:
        for lin, (w, b) in zip(lins, saved, strict=True):
            lin.weight.copy_(w)
            if b is not None:
                lin.bias.copy_(b)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_hooked_value_is_the_activation_of_the_gate_by_hand(family):
    model, sites = tiny(family), tiny_sites(family)
    ids = _ids()
    act_fn = BY_HAND[ACT[family]]
    seen: dict[str, list[torch.Tensor]] = {"x": [], "a": [], "d": []}
    handles = []
    with _wide_gates(model, sites, ids):
        for i in range(sites.n_layers):
            # the MLP input, as the first up/gate linear (fc_in; fc1 in OPT) receives it
            handles.append(sites.ups[i][0].register_forward_pre_hook(lambda _m, a: seen["x"].append(a[0])))
            handles.append(sites.acts[i].register_forward_hook(lambda _m, _a, out: seen["a"].append(out)))
            handles.append(sites.downs[i].register_forward_pre_hook(lambda _m, a: seen["d"].append(a[0])))
        try:
            model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
        assert [len(v) for v in seen.values()] == [sites.n_layers] * 3
        spec = sites.spec
        for i in range(sites.n_layers):
            x, a = seen["x"][i], seen["a"][i]
            pre = _linear(x, sites.ups[i][0])
            if spec.fused_gate_up:
                gate, up = pre.chunk(2, dim=-1)  # [gate; up] stacked on the output dimension
            else:
                gate, up = pre, (_linear(x, sites.ups[i][1]) if spec.gated else None)
            assert float(gate.abs().max()) > 2.0  # where the activations differ
            expected = act_fn(gate, sites.acts[i])
            assert a.shape[-1] == sites.n_neurons
            torch.testing.assert_close(a, expected, **TOL)
            # the check tells the activations apart: every other one misses (exact vs tanh GELU by ~5e-4)
            for other, fn in BY_HAND.items():
                if other not in (ACT[family], "xielu"):
                    assert not torch.allclose(fn(gate, None), a, **TOL), other
            # what the down projection reads: the neuron value itself, or the neuron value times `up`
            torch.testing.assert_close(seen["d"][i], expected * up if spec.gated else expected, **TOL)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_zeroing_neurons_by_hook_equals_zeroing_down_inputs(family):
    model, sites = tiny(family), tiny_sites(family)
    ids = _ids(1)
    base = model(input_ids=ids).logits

    def zero(_m, _a, out):
        out = out.clone()
        out[..., list(ZEROED)] = 0
        return out

    handles = [a.register_forward_hook(zero) for a in sites.acts]
    try:
        hooked = model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()

    saved = [d.weight.detach().clone() for d in sites.downs]
    try:
        for d in sites.downs:
            if isinstance(d, Conv1D):  # weight [in, out]: the neuron is a row
                d.weight[list(ZEROED), :] = 0
            else:  # nn.Linear weight [out, in]: the neuron is a column
                d.weight[:, list(ZEROED)] = 0
        edited = model(input_ids=ids).logits
    finally:
        for d, w in zip(sites.downs, saved, strict=True):
            d.weight.copy_(w)

    assert (hooked - base).abs().max() > 1e-4, "zeroing neurons must change the logits"
    torch.testing.assert_close(hooked, edited, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(input_ids=ids).logits, base)  # weights restored, hooks removed


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt", "gemma3", "mpt"])
def test_bare_base_model_is_found_too(family):
    config = AutoConfig.for_model(family, **TINY_CONFIGS[family])
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    sites = find_sites(model)
    validate_sites(model, sites)
    assert sites.shape == tiny_sites(family).shape
    assert tiny_sites(family).layers_path.endswith(sites.layers_path)


def test_validate_restores_training_flags():
    model = make_tiny("gpt2")
    model.train()
    model.transformer.h[0].mlp.dropout.eval()
    before = [m.training for m in model.modules()]
    validate_sites(model, find_sites(model))
    assert [m.training for m in model.modules()] == before


def test_unsupported_model_type_names_it_and_lists_supported():
    config = AutoConfig.for_model("bert", vocab_size=300, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=48)
    model = AutoModel.from_config(config)
    with pytest.raises(LangNeuronsError, match=r"type 'bert' has no known neuron site; supported: ") as e:
        find_sites(model)
    assert all(t in str(e.value) for t in ("gemma3_text", "gpt2", "llama", "opt", "qwen3"))


def test_not_a_transformers_model():
    with pytest.raises(LangNeuronsError, match=r"no config\.model_type"):
        find_sites(torch.nn.Linear(2, 2))


def test_missing_module_is_named(monkeypatch):
    model = make_tiny("llama")
    monkeypatch.delattr(model.model.layers[1].mlp, "act_fn")
    with pytest.raises(LangNeuronsError, match=r"module\(s\) model\.layers\.1\.mlp\.act_fn;"):
        find_sites(model)


def test_missing_layer_list(monkeypatch):
    monkeypatch.setitem(REGISTRY, "llama", replace(REGISTRY["llama"], layers=("model.blocks",)))
    with pytest.raises(LangNeuronsError, match=r"no decoder layer list at model\.blocks"):
        find_sites(tiny("llama"))


def test_shared_activation_module_is_refused():
    model = make_tiny("llama")
    model.model.layers[1].mlp.act_fn = model.model.layers[0].mlp.act_fn
    with pytest.raises(LangNeuronsError, match="shares one activation module"):
        find_sites(model)


@pytest.mark.parametrize(
    ("family", "change", "message"),
    [
        ("llama", {"act": "mlp.up_proj"}, r"does not act on the output of model\.layers\.0\.mlp\.gate_proj"),
        ("llama", {"up": ("mlp.up_proj", "mlp.gate_proj")}, "does not act on the output"),
        ("llama", {"act": "mlp"}, r"has width 32, expected 48"),
        ("llama", {"act": "self_attn"}, r"has width tuple, expected 48"),
        ("llama", {"down": "mlp.up_proj"}, r"has width 48, expected 32"),  # width of the wrong linear
        ("phi3", {"fused_gate_up": False}, "does not act on the output"),
        ("gpt2", {"gated": True, "up": ("mlp.c_fc", "mlp.c_fc")}, r"does not read mlp\.act \* mlp\.c_fc"),
        ("gpt2", {"act": "attn.resid_dropout"}, "width 32, expected 48"),
        ("opt", {"act": "final_layer_norm"}, "width 32, expected 48"),
    ],
)
def test_wrong_registry_entry_fails_validation(monkeypatch, family, change, message):
    monkeypatch.setitem(REGISTRY, family, replace(REGISTRY[family], **change))
    model = tiny(family)
    sites = find_sites(model)
    with pytest.raises(LangNeuronsError, match=message) as err:
        validate_sites(model, sites)
    assert f"'{family}'" in str(err.value)
    assert "registry entry does not match" in str(err.value)
