"""AttnLRP (Achtibat et al., ICML 2024, arXiv 2402.05602) as input x modified gradient, in one backward pass.

Layer-wise Relevance Propagation distributes an explained output backwards over a network's units. For the
rules AttnLRP uses in decoder LMs, the relevance of a tensor `x` is `x * g` where `g` is the gradient of the
explained output through a *modified* backward pass:

- linear layers (and residual sums, RoPE, scalings): LRP-epsilon with epsilon -> 0, i.e. the plain gradient
  (as the authors' efficient implementation `lxt` does); without biases they conserve relevance exactly;
- normalisations (RMSNorm): the identity rule, `R_in = R_out` per element: the norm's output is recomputed as
  `x * (out / x).detach()`, so its 1/rms (and weight) acts as a constant;
- element-wise nonlinearities (the MLP's activation): the identity rule, `act(x) = x * (act(x) / x).detach()`;
- the gate x up product of gated MLPs: the uniform rule, half of the product's relevance to each factor (the
  gradient into the gate and the up projections is halved);
- the attention matrix products q.k and attn.v: the uniform rule; the attention weights' half of attn.v then
  passes the softmax, whose plain gradient *is* the paper's softmax rule `R_in = x * (R_out - s * sum R_out)`,
  and q.k splits it again: the gradient into q and k is quartered, into v halved (as `lxt` does).

The softmax rule linearises the softmax with a bias term that absorbs relevance: on a one-token input the
attention weight is the constant 1 and the softmax absorbs the whole half of each attention block's relevance
that went to the attention weights. Every other rule conserves relevance in a bias-free model.

`attnlrp(model)` switches a supported model into this mode for the duration of a `with` block (forward hooks
on its norms, activations, gate/up and q/k/v projections, all removed in `finally`), so that any
gradient x input read inside the block (e.g. at the neuron sites by `collect_relevance`) is AttnLRP relevance.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from langneurons.core.errors import LangNeuronsError
from langneurons.core.hooks import Hooks
from langneurons.core.sites import NeuronSites, find_sites

# Families whose every nonlinearity on the text path is an RMSNorm, the MLP's activation, the gate x up
# product or the attention softmax, with separate q/k/v projections; tests/test_lrp.py checks conservation on
# a tiny model of each. Others (LayerNorm, soft-capping, fused qkv or gate/up projections) are not supported.
SUPPORTED = (
    "llama", "mistral", "ministral", "ministral3", "qwen2", "qwen3", "gemma", "gemma3_text", "gemma3", "olmo2",
    "smollm3", "granite", "helium", "exaone4", "seed_oss", "ernie4_5", "hunyuan_v1_dense", "vaultgemma", "arcee",
    "nanochat",
)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by a constant factor."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` unchanged; its gradient multiplied by `factor` (the uniform rule: 1/2 per factor of a product)."""
    return _ScaleGrad.apply(x, factor) if x.requires_grad else x


def identity_rule(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`out` of an element-wise map of `x` (same shape), as `x * (out / x).detach()`: the same values, and
    relevance `x * g` passes unchanged (the identity rule). Where `x` is 0, so is the relevance."""
    if not x.requires_grad:
        return out
    wide = torch.promote_types(out.dtype, torch.float32)
    xw = x.to(wide)
    ratio = torch.where(xw != 0, out.detach().to(wide) / xw.detach(), torch.zeros((), dtype=wide, device=x.device))
    return (xw * ratio).to(out.dtype)


@contextlib.contextmanager
def lrp_rules(identity: Iterable[nn.Module] = (), scale: Mapping[nn.Module, float] | None = None
              ) -> Iterator[None]:
    """For the duration: the identity rule on the outputs of the `identity` modules (element-wise maps of their
    first input) and the gradient of each `scale` module's output multiplied by its factor. The hooks are removed
    when the block ends, also on error."""
    with Hooks() as hooks:
        for module in identity:
            hooks.edit(module, lambda out, x: identity_rule(x, out), with_input=True)
        for module, factor in (scale or {}).items():
            hooks.edit(module, functools.partial(scale_grad, factor=factor))
        yield


def _get(root: nn.Module, path: str) -> nn.Module | None:
    found: Any = root
    for part in path.split("."):
        found = getattr(found, part, None)
        if found is None:
            return None
    return found


def check_supported(model: nn.Module) -> None:
    """Raise a one-line LangNeuronsError unless `attnlrp` supports the model's family."""
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    if mtype not in SUPPORTED:
        raise LangNeuronsError(
            f"the attnlrp rule does not support model type '{mtype}' (supported: {', '.join(SUPPORTED)}); "
            "use rule grad_x_input"
        )


def _plan(model: nn.Module, sites: NeuronSites) -> tuple[list[nn.Module], dict[nn.Module, float]]:
    """The modules the AttnLRP rules act on: identity rule on norms and activations; 1/2 on gate and up
    projections, 1/4 on q and k, 1/2 on v projections."""
    decoder = (_get(model, sites.layers_path.rpartition(".")[0]) if "." in sites.layers_path else model) or model
    norms = [m for m in decoder.modules() if type(m).__name__.endswith("RMSNorm")]
    others = sorted({type(m).__name__ for m in decoder.modules()
                     if "norm" in type(m).__name__.lower() and not type(m).__name__.endswith("RMSNorm")})
    if others:
        raise LangNeuronsError(f"the attnlrp rule has no identity rule for {', '.join(others)}; use grad_x_input")
    scale: dict[nn.Module, float] = {}
    for i, layer in enumerate(sites.layers):
        if sites.spec.gated:
            scale.update({up: 0.5 for up in sites.ups[i]})
        q, k, v = (_get(layer, f"self_attn.{name}") for name in ("q_proj", "k_proj", "v_proj"))
        if q is None or k is None or v is None:
            raise LangNeuronsError(
                f"the attnlrp rule needs separate self_attn.q_proj/k_proj/v_proj in {sites.layers_path}.{i}; "
                "use grad_x_input"
            )
        scale.update({q: 0.25, k: 0.25, v: 0.5})
    return [*norms, *sites.acts], scale


@contextlib.contextmanager
def attnlrp(model: nn.Module, sites: NeuronSites | None = None) -> Iterator[None]:
    """Inside the block, gradient x input anywhere in `model` is AttnLRP relevance of what is backpropagated
    (see the module docstring). Raises for unsupported families before changing anything."""
    check_supported(model)
    identity, scale = _plan(model, sites or find_sites(model))  # type: ignore[arg-type]
    with lrp_rules(identity, scale):
        yield
