"""The one way this package hooks a model: read or edit a module's input or output, stop the forward pass after a
module, and know whether a pass processes a prompt or generated tokens. Every hook is removed when the block
ends, also on error (in the manner of baukit's `Trace`/`TraceDict`).

    with Hooks(sites) as hooks:
        hooks.read(sites.acts[0], seen.append)
        hooks.edit(sites.acts[1], lambda a: a * 0)
        hooks.run(model.base_model, input_ids=ids)

Callbacks see a module's output (the first element when the module returns a tuple) or its first input, as
`[batch, seq, width]`: where the MLP works on flat `[batch * seq, width]` activations (OPT,
`SiteSpec.flat_tokens`) the tensor is shown reshaped, and an edit is laid out again as the module gave it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from langneurons.core.errors import LangNeuronsError
from langneurons.core.lm import decoder_body


class StopForward(Exception):
    """Raised after a module read with `stop=True`: nothing after it is needed. `Hooks.run` swallows it."""


def cached_tokens(args: tuple, kwargs: dict[str, Any]) -> int:
    """Tokens already held by the key/value cache passed to a decoder forward (0: the prompt phase).

    The cache is found by what it is (an object with `get_seq_length`), not by the argument's name, which
    transformers has renamed (`past_key_values` -> `cache` in 5.24).
    """
    for value in (*args, *kwargs.values()):
        if hasattr(value, "get_seq_length"):
            return int(value.get_seq_length())
    return 0


def _first(args: tuple, kwargs: dict[str, Any]) -> Any:
    """A module's first input, positional or by keyword."""
    return args[0] if args else next(iter(kwargs.values()), None)


class Hooks:
    """Forward hooks registered through one object and removed together (`close()`, or the end of a `with`).

    `sites`: the model's neuron sites; needed to show OPT's flat activations as `[batch, seq, width]` (the
    shape is read from the first decoder layer's input on each forward). `phase`: a model whose body's
    forward passes set `prompt_phase` (True while no tokens are cached yet, False while generating).
    """

    def __init__(self, sites: Any = None, phase: nn.Module | None = None):
        self.prompt_phase = True
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._flat = sites is not None and sites.spec.flat_tokens
        self._shape: tuple[int, int] | None = None
        try:
            if self._flat:
                assert sites is not None
                self._register(sites.layers[0].register_forward_pre_hook(self._on_layer, with_kwargs=True))
            if phase is not None:
                body = decoder_body(phase)
                self._register(body.register_forward_pre_hook(self._on_body, with_kwargs=True))
        except BaseException:
            self.close()
            raise

    # --- bookkeeping ---------------------------------------------------------------------------------------

    def _register(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self._handles.append(handle)

    def _on_layer(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() == 3), None)
        if hidden is not None:
            self._shape = (int(hidden.shape[0]), int(hidden.shape[1]))

    def _on_body(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        self.prompt_phase = cached_tokens(args, kwargs) == 0

    def tokens(self, x: Any) -> Any:
        """`x` as [batch, seq, width] (a flat [batch * seq, width] activation reshaped); anything else as it is."""
        if not (self._flat and isinstance(x, torch.Tensor) and x.dim() == 2):
            return x
        if self._shape is None or self._shape[0] * self._shape[1] != x.shape[0]:
            raise LangNeuronsError(
                f"a flat activation of {x.shape[0]} rows does not match the decoder's input {self._shape}; "
                "run the model's body (not a single layer) while hooking"
            )
        return x.reshape(*self._shape, x.shape[-1])

    def _restore(self, new: torch.Tensor, old: Any) -> torch.Tensor:
        """An edited [batch, seq, width] tensor laid out again like the module's own `old`."""
        if isinstance(old, torch.Tensor) and old.dim() == 2 and new.dim() == 3:
            return new.reshape(old.shape)
        return new

    # --- hooks ---------------------------------------------------------------------------------------------

    def read(self, module: nn.Module, fn: Callable[[Any], object], *, input: bool = False, stop: bool = False,
             whole: bool = False) -> None:
        """Call `fn(x)` with the module's output (or, with `input`, its first input) on every forward; with
        `stop`, end the forward pass after this module (`run` swallows the `StopForward`); with `whole`, a tuple
        output is passed as it is, not its first element."""
        if input:
            def pre_hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
                fn(self.tokens(_first(args, kwargs)))

            self._register(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            def hook(_module: nn.Module, _args: tuple, output: Any) -> None:
                fn(self.tokens(output[0] if isinstance(output, tuple) and not whole else output))

            self._register(module.register_forward_hook(hook))
        if stop:
            self._register(module.register_forward_hook(_stop))

    def edit(self, module: nn.Module, fn: Callable[..., torch.Tensor | None], *, input: bool = False,
             with_input: bool = False) -> None:
        """Replace the module's output (or, with `input`, its first input) by `fn(x)` on every forward; `fn`
        returns the new tensor, or None to keep `x` (possibly edited in place). With `with_input`, an output
        edit is called as `fn(output, first_input)`."""
        if input:
            def pre_hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple | None:
                old = _first(args, kwargs)
                new = fn(self.tokens(old))
                if new is None:
                    return None
                new = self._restore(new, old)
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, next(iter(kwargs)): new}

            self._register(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            return

        def hook(_module: nn.Module, args: tuple, output: Any) -> Any:
            old = output[0] if isinstance(output, tuple) else output
            x = self.tokens(old)
            new = fn(x, self.tokens(args[0]) if args else None) if with_input else fn(x)
            if new is None:
                return None
            new = self._restore(new, old)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        self._register(module.register_forward_hook(hook))

    @staticmethod
    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, e.g. a model's forward; None when a `stop` read ended it early."""
        try:
            return fn(*args, **kwargs)
        except StopForward:
            return None

    def close(self) -> None:
        """Remove every hook registered here."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Hooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop(_module: nn.Module, _args: tuple, _output: Any) -> None:
    raise StopForward
