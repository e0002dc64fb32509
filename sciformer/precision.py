"""bf16 parameters with fp32 master weights: bf16 autocast without a weight cast per step.

Under Lightning's ``bf16-mixed`` the parameters stay float32 and autocast casts every weight to bf16 on every
forward pass, and every bf16 gradient back (scOT-T: 745 of its 3,233 aten ops per step; on a GPU each is a
kernel launch in a launch-bound step). :class:`BF16MasterWeights` keeps the bf16 copy as the module's
parameters, so autocast finds them already in bf16, and keeps float32 master weights for the optimizer
(Megatron-LM and apex O2 do the same):

- the module's floating parameters are cast to bf16 once (before DDP wraps it), except those of norm layers;
  a float32 copy of each is kept; buffers stay float32;
- the optimizers step the float32 copies: after the backward pass the bf16 gradients are copied into float32
  gradient buffers (one ``_foreach_copy_``), clipping and ``on_before_optimizer_step`` see those, and after the
  step the updated weights are copied back into the bf16 parameters (one more);
- ``state_dict()`` of the module or of any submodule returns the float32 weights, and ``load_state_dict``
  writes them, so checkpoints, resuming and ``sciformer export`` are float32 as with ``bf16-mixed``;
- the forward pass runs under bf16 autocast as with ``bf16-mixed``: inputs are cast by the first product,
  norms, softmax and losses autocast keeps in float32 still run in float32; a module called outside
  Lightning's steps (in ``on_fit_start``, say) enters bf16 autocast itself.

What differs from ``bf16-mixed``: gradients are reduced (DDP) and accumulated over ``accumulate_grad_batches``
in bf16, and activations computed from parameters outside autocast's lists (a ``x * self.scale``) are bf16.
FSDP2 (``ModelParallelStrategy``) has this built in: use ``bf16-mixed`` there.

Use it with ``sciformer fit ... --trainer.plugins sciformer.precision.BF16MasterWeights``
(``--trainer.precision`` may be left as set: the CLI gives the plugin precedence) or
``sciformer finetune ... --precision bf16-master``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

NAME = "bf16-master"  # the value of ``sciformer finetune --precision`` that selects this plugin
MASTERS = "_sciformer_bf16_masters"  # attribute of a converted module: its masters, for a later trainer


# Norm layers keep float32 parameters: CPU ``layer_norm`` takes bf16 input with float32 weights but not the
# reverse, and the few weights of norms are not where the casts were
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)


class BF16MasterWeights(MixedPrecision):
    """Lightning precision plugin: bf16 parameters under bf16 autocast, fp32 master weights (module docstring)."""

    def __init__(self) -> None:
        # bf16-mixed's autocast (forward_context), on the model's device, which ``connect`` sets
        super().__init__("bf16-mixed", device="cpu")
        self.masters: dict[nn.Parameter, nn.Parameter] = {}
        self._trained: list[tuple[nn.Parameter, nn.Parameter]] = []
        self._grads: dict[nn.Parameter, torch.Tensor] = {}
        self._calls: dict[nn.Module, int] = {}  # calls in progress per module, for the autocast hooks
        self._entered: list[tuple[nn.Module, int, torch.autocast]] = []

    # ---- the module: bf16 parameters, fp32 masters behind its state dict -------------------------------
    def convert_module(self, module: nn.Module) -> nn.Module:
        if self.masters:  # fit, then test with the same trainer: converted already
            return module
        if hasattr(module, MASTERS):  # converted by another trainer's plugin: its hooks serve these masters
            self.masters = getattr(module, MASTERS)
            return module
        for sub in module.modules():
            own = [p for p in sub._parameters.values() if p is not None and p.is_floating_point()]
            if isinstance(sub, NORMS) or not own:
                continue
            for p in own:
                self.masters[p] = nn.Parameter(p.detach().to(torch.float32, copy=True), p.requires_grad)
                p.data = p.data.to(torch.bfloat16)
            sub._register_state_dict_hook(self._save_masters)
            sub._register_load_state_dict_pre_hook(self._load_masters, with_module=True)
            sub.register_forward_pre_hook(self._enter_autocast)
            sub.register_forward_hook(self._exit_autocast, always_call=True)
        setattr(module, MASTERS, self.masters)
        return module

    def _save_masters(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
        for name, p in module._parameters.items():
            if p in self.masters and prefix + name in state_dict:
                state_dict[prefix + name] = self.masters[p].detach().clone()

    def _load_masters(self, module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        for name, p in module._parameters.items():
            value = state_dict.get(prefix + name)
            if p in self.masters and isinstance(value, torch.Tensor) and value.shape == p.shape:
                with torch.no_grad():
                    self.masters[p].copy_(value)

    def _enter_autocast(self, module: nn.Module, args: Any) -> None:
        """A module with bf16 weights called outside Lightning's steps (a hook, a callback) runs under bf16
        autocast as inside them, instead of failing on a float32 input."""
        depth = self._calls[module] = self._calls.get(module, 0) + 1
        if not torch.is_autocast_enabled(self.device):
            ctx = self.autocast_context_manager()  # bf16-mixed's, on the device ``connect`` found
            ctx.__enter__()
            self._entered.append((module, depth, ctx))

    def _exit_autocast(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._entered and self._entered[-1][:2] == (module, self._calls.get(module)):
            self._entered.pop()[2].__exit__(None, None, None)
        self._calls[module] -= 1

    # ---- the optimizers step the masters ---------------------------------------------------------------
    def connect(self, model: nn.Module, optimizers: list, lr_schedulers: list) -> tuple:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.device = device.type
        for p, master in self.masters.items():
            if master.device != p.device:
                master.data = master.data.to(p.device)
        self._trained = []
        for optimizer in optimizers:  # norm layers' float32 parameters are stepped as they are
            for group in optimizer.param_groups:
                self._trained += [(p, self.masters[p]) for p in group["params"] if p in self.masters]
                group["params"] = [self.masters.get(p, p) for p in group["params"]]
        return model, optimizers, lr_schedulers

    def grads_to_masters(self) -> None:
        """The bf16 gradients of the trained parameters into the masters' float32 gradients (one foreach copy;
        the buffers are kept across steps), the bf16 ones dropped."""
        pairs = [(p, m) for p, m in self._trained if p.grad is not None]
        if not pairs:
            return
        for p, m in pairs:
            if p not in self._grads:
                self._grads[p] = torch.empty_like(m)
        buffers = [self._grads[p] for p, _ in pairs]
        torch._foreach_copy_(buffers, [p.grad for p, _ in pairs])
        for (p, m), b in zip(pairs, buffers):
            m.grad = b
            p.grad = None

    def masters_to_params(self) -> None:
        """The updated masters, rounded, into the module's bf16 parameters (one foreach copy)."""
        params = [p for p, m in self._trained if m.grad is not None]
        if params:
            with torch.no_grad():
                torch._foreach_copy_(params, [self.masters[p] for p in params])

    def _wrap_closure(self, model, optimizer, closure):
        result = closure()  # forward and backward: bf16 gradients on the module's parameters
        self.grads_to_masters()
        self._after_closure(model, optimizer)  # clipping and on_before_optimizer_step see the fp32 gradients
        return result

    def optimizer_step(self, optimizer, model, closure, **kwargs):
        result = super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        self.masters_to_params()
        return result


def precision_names() -> tuple[str, ...]:
    """The precision strings ``trainer_precision`` takes: Lightning's (with its short aliases) and ``bf16-master``."""
    import typing

    try:  # Lightning's own list (private names: a fallback for versions that move them)
        from lightning.fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

        lightning = typing.get_args(_PRECISION_INPUT_STR) + typing.get_args(_PRECISION_INPUT_STR_ALIAS)
    except ImportError:
        lightning = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "64", "32", "16", "bf16")
    return lightning + (NAME,)


def check_precision(precision: str, where: str = "--precision") -> str:
    """``precision`` if ``trainer_precision`` takes it, else one ConfigError naming ``where`` and the choices."""
    from sciformer.errors import ConfigError

    names = precision_names()
    if precision not in names:
        raise ConfigError(f"{where} {precision!r} is not a precision; use one of {', '.join(names)}")
    return precision


def trainer_precision(precision: str) -> dict[str, Any]:
    """``L.Trainer`` keyword arguments for a precision string: Lightning's own, or ``bf16-master`` (the plugin)."""
    if precision == NAME:
        return {"precision": None, "plugins": [BF16MasterWeights()]}
    return {"precision": precision}
