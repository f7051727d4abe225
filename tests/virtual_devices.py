"""A model split over two devices, for device-placement tests: real (cuda:0 + cpu) or simulated on the CPU.

The simulation labels every tensor with a pretend device: the host ("cpu"), `cpu:0` (the first half of the
model) or `cpu:1` (the second half and the LM head). A torch-function mode reports those labels as `.device`,
gives `.to(device)` and factory functions (`device=`) their label, passes labels on through every op, and raises
when an op mixes tensors of two devices the way CUDA would refuse (a non-scalar host tensor with a device tensor,
or two devices; host index tensors may index a device tensor, as on CUDA). Autograd's gradients carry no
label and are not checked. Modules of the second half move their
inputs there first, as accelerate's hooks do for a `device_map`, and the model's outputs return to its inputs'
device. So code that puts a mask, index or target on the embedding's device while the logits sit on the head's
fails here as it would on two GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

HOST, FIRST, SECOND = torch.device("cpu"), torch.device("cpu", 0), torch.device("cpu", 1)
_LABEL = "_virtual_device"
_DEVICE_GET = torch.Tensor.device.__get__
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_, torch.Tensor.index_put}
_CROSSING = {torch.Tensor.copy_}  # copies between devices are allowed


def label(t: torch.Tensor) -> torch.device | None:
    """The pretend device of `t`; None for a tensor made outside the simulation's sight (autograd's gradients)."""
    return getattr(t, _LABEL, None)


def _as_device(value: object) -> torch.device | None:
    if isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        try:
            return torch.device(value)
        except RuntimeError:
            return None
    return None


class VirtualDevices(TorchFunctionMode):
    """See the module docstring; `errors` collects what a real split would have refused."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == _DEVICE_GET:
            return label(args[0])
        if getattr(func, "__name__", "") == "__get__":
            return func(*args, **kwargs)
        target = self._target(func, args, kwargs)
        result = func(*args, **kwargs)
        if target is None:
            return result
        if func is torch.Tensor.to and result is args[0] and target != label(args[0]):
            result = result.view_as(result)  # a move makes a new tensor (a real one would copy)

        def mark(x):
            if isinstance(x, torch.Tensor) and not isinstance(x, torch.nn.Parameter):
                setattr(x, _LABEL, target)
            return x

        return tree_map(mark, result)

    def _target(self, func, args, kwargs) -> torch.device | None:
        """The device of the op's result, after checking its inputs sit together (None: leave unlabelled)."""
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            for value in (*args[1:], kwargs.get("device")):
                if isinstance(value, torch.Tensor):
                    return label(value)
                device = _as_device(value)
                if device is not None:
                    return device
            return label(args[0])
        if func is torch.Tensor.cpu:
            return HOST
        device = _as_device(kwargs.get("device"))
        if device is not None:
            return device
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        if not tensors:
            return HOST  # a factory without device=
        if func in _INDEXING:
            tensors = [tensors[0], *(t for t in tensors[1:] if label(t) != HOST)]
        known = [t for t in tensors if label(t) is not None]
        labels = {label(t) for t in known if not (t.dim() == 0 and label(t) == HOST)}
        if func not in _CROSSING and len(labels) > 1:
            shapes = [(tuple(t.shape), str(label(t))) for t in known]
            raise RuntimeError(f"{getattr(func, '__name__', func)} mixes devices {sorted(map(str, labels))}: {shapes}")
        if labels:
            return labels.pop()
        return label(known[0]) if known else None


def _move(device: torch.device):
    """A forward pre-hook that moves every tensor argument to `device` (accelerate's AlignDevicesHook)."""

    def hook(_module, args, kwargs):
        move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
        return tree_map(move, args), tree_map(move, kwargs)

    return hook


def _second_half(model: torch.nn.Module) -> list[str]:
    """Names of the modules placed on the second device: the upper half of the decoder layers, the final norm
    and the LM head."""
    from langneurons.core.sites import find_sites

    sites = find_sites(model)
    parent = sites.layers_path.rsplit(".", 1)[0]
    upper = [f"{sites.layers_path}.{i}" for i in range(sites.n_layers // 2, sites.n_layers)]
    norms = [f"{parent}.{n}" for n in ("norm", "final_layernorm", "ln_f") if hasattr(model.get_submodule(parent), n)]
    head = next(name for name, m in model.named_modules() if m is model.get_output_embeddings())
    return [*upper, *norms, head]


@contextlib.contextmanager
def simulated_split(model: torch.nn.Module) -> Iterator[None]:
    """Run `model` (on the CPU) as if split over two devices (see the module docstring)."""
    second = _second_half(model)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, t in tensors:
        setattr(t, _LABEL, SECOND if any(name.startswith(m + ".") for m in second) else FIRST)
    handles = [model.get_submodule(m).register_forward_pre_hook(_move(SECOND), with_kwargs=True) for m in second]
    try:
        with VirtualDevices():
            yield
    finally:
        for h in handles:
            h.remove()
        for _, t in tensors:
            delattr(t, _LABEL)


@contextlib.contextmanager
def cuda_split(model: torch.nn.Module) -> Iterator[None]:
    """Dispatch `model` over cuda:0 (first half) and the CPU (second half and head) with accelerate, as
    from_pretrained(device_map=...) would; moved back to the CPU afterwards."""
    from accelerate import dispatch_model
    from accelerate.hooks import remove_hook_from_submodules

    from langneurons.core.sites import find_sites

    second = _second_half(model)
    layers_path = find_sites(model).layers_path
    parent = layers_path.rsplit(".", 1)[0]  # the decoder body, a child of the model (e.g. "model")
    names = [f"{parent}.{n}" for n, _ in model.get_submodule(parent).named_children() if f"{parent}.{n}" != layers_path]
    names += [f"{layers_path}.{i}" for i in range(len(model.get_submodule(layers_path)))]
    names += [n for n, _ in model.named_children() if n != parent]
    device_map = {n: "cpu" if n in second else 0 for n in names}
    dispatch_model(model, device_map=device_map, main_device=0)
    try:
        yield
    finally:
        remove_hook_from_submodules(model)
        model.to("cpu")
