"""The contract between a model family and the code that adapts, fine-tunes and exports it.

Each family declares one ``FamilySpec`` next to its model (``ScOT.spec = FamilySpec(...)``); adaptation, the
learning-rate groups, LoRA and export read it, so no code outside a model file knows a family's parameter
names. Patterns are regular expressions searched in qualified parameter (or module) names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

KINDS = ("operator", "series", "autoencoder", "generative", "property")
NOTHING = r"(?!)"  # a pattern that matches no name


@dataclass(frozen=True)
class ChannelTensors:
    """Parameters whose slices along ``dims`` are the variables of one side of the data spec.

    ``side`` is the data-spec key listing those variables by name ("inputs", "outputs", "properties").
    ``extras``: the dims hold further channels after the variables that are not variables (FNO's lead time and
    grid coordinates); they are copied unchanged.
    """

    side: str
    pattern: str
    dims: tuple[int, ...] = (0,)
    extras: bool = False


@dataclass(frozen=True)
class FamilySpec:
    """What a family's parameters mean.

    kind: which data the family is trained on ("operator" fields, "series", ...); a checkpoint of another kind
        is refused by commands that need this one.
    channels: the tensors that carry variables; adaptation copies them slice by slice, matched by name.
    adapters: parameters facing the data (embedding, recovery, heads): the only trainable ones in
        ``frozen-latent`` mode, and trained beside the LoRA updates in ``lora`` mode. The trunk is the rest.
    time_conditioning: the parameters that condition on the lead time.
    lora_targets: the ``nn.Linear`` (or 1×1 ``nn.Conv1d``) modules LoRA wraps; ``sciformer export`` merges
        each update into the wrapped layer's weight, so an export loads without LoRA.
    lr_groups: named learning-rate groups (``embedding_recovery``, ``time_embedding``) -> parameter pattern.
    no_weight_decay: parameters of rank ≥ 2 that take no weight decay (embeddings, position-bias tables, logit
        scales); tensors of rank < 2 (biases, norms) never take any.
    sized_by_data: config fields the data decides (channel counts): a pretrained model is rebuilt with the
        data's values and its channel tensors adapted; every other field keeps the checkpoint's value (an
        iTransformer's lookback is checked against the data, never silently changed).
    blocks: the modules (full-name pattern) that are the units of FSDP2 sharding, activation checkpointing and
        ``compile: blocks`` (``sciformer.parallel``): each is called as a whole in forward and owns every
        parameter it reads; the rest of the model is sharded at the root.
    """

    kind: str
    channels: tuple[ChannelTensors, ...] = ()
    sized_by_data: tuple[str, ...] = ()
    adapters: str = NOTHING
    time_conditioning: str = NOTHING
    lora_targets: str = NOTHING
    lr_groups: Mapping[str, str] = field(default_factory=dict)
    no_weight_decay: str = NOTHING
    blocks: str = NOTHING

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"FamilySpec kind must be one of {KINDS}, not {self.kind!r}")
        for p in (self.adapters, self.time_conditioning, self.lora_targets, self.no_weight_decay, self.blocks,
                  *self.lr_groups.values(), *(c.pattern for c in self.channels)):
            re.compile(p)

    def channel_tensor(self, name: str) -> ChannelTensors | None:
        """The channel declaration a parameter name falls under, if any (first match)."""
        return next((c for c in self.channels if re.search(c.pattern, name)), None)

    def is_adapter(self, name: str) -> bool:
        return re.search(self.adapters, name) is not None

    def is_time_conditioning(self, name: str) -> bool:
        return re.search(self.time_conditioning, name) is not None

    def takes_weight_decay(self, name: str, ndim: int) -> bool:
        return ndim >= 2 and re.search(self.no_weight_decay, name) is None

    def block_modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The ``blocks`` of ``model`` in forward order of registration; a block inside a block is not listed."""
        found: list[tuple[str, nn.Module]] = []
        for name, module in model.named_modules():
            if name and re.fullmatch(self.blocks, name) and not any(name.startswith(f + ".") for f, _ in found):
                found.append((name, module))
        return found


def spec_of(model: nn.Module | type[nn.Module]) -> FamilySpec:
    """The spec a model class declares (``cls.spec``); a clear error for a class without one."""
    cls = model if isinstance(model, type) else type(model)
    spec = getattr(cls, "spec", None)
    if not isinstance(spec, FamilySpec):
        raise TypeError(f"{cls.__name__} declares no FamilySpec (`spec = FamilySpec(...)` in its model file)")
    return spec
