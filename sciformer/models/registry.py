"""Named model sizes: one line per size, each a model class plus its published hyper-parameters.

A model class declares ``config_class`` (a dataclass), takes an instance of it as its only argument, and
declares its ``spec`` (``sciformer.models.spec.FamilySpec``). ``register("scot-t", ScOT, embed_dim=48, ...)``
records a size; ``get("scot-t", in_channels=2)`` builds it.

A new family is one model file (config, model, spec, ``register`` lines) plus its line in ``FAMILY_MODULES``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from torch import nn

from sciformer.errors import SciformerError
from sciformer.models.spec import spec_of

# Modules that register sizes when imported. Imported on first use so `import sciformer` stays light.
# One line per model family; each module registers its named sizes on import.
FAMILY_MODULES: list[str] = [
    "sciformer.models.factformer",
    "sciformer.models.adit",
    "sciformer.models.graph",
    "sciformer.models.itransformer",
    "sciformer.models.scot",
    "sciformer.models.fno",
]

_SIZES: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {}
_CLASSES: dict[str, type[nn.Module]] = {}
_loaded = False


def register(name: str, model_cls: type[nn.Module], **hparams: Any) -> None:
    """Record a named size of ``model_cls``; its hyper-parameters must be fields of ``model_cls.config_class``."""
    spec_of(model_cls)  # every family declares its spec next to its model
    fields = {f.name for f in dataclasses.fields(model_cls.config_class)}
    unknown = set(hparams) - fields
    if unknown:
        raise TypeError(f"size {name!r}: {sorted(unknown)} are not fields of {model_cls.config_class.__name__}")
    _SIZES[name] = (model_cls, hparams)
    _CLASSES[model_cls.__name__] = model_cls


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for module in FAMILY_MODULES:
            importlib.import_module(module)
        _loaded = True


def names() -> list[str]:
    """Registered model names, sorted."""
    _load_families()
    return sorted(_SIZES)


def model_class(name: str) -> type[nn.Module]:
    """The class registered under a size name or a class name (used by `load`; no arbitrary imports)."""
    _load_families()
    if name in _SIZES:
        return _SIZES[name][0]
    if name in _CLASSES:
        return _CLASSES[name]
    raise SciformerError(f"unknown model {name!r}; registered: {', '.join(names()) or '(none)'}")


def config(name: str, **overrides: Any):
    """The config dataclass of a named size (or of a model class, by class name) with ``overrides`` applied
    (unknown keys are a clear error)."""
    _load_families()
    if name in _SIZES:
        cls, hparams = _SIZES[name]
    elif name in _CLASSES:  # a class name: its config's defaults (a checkpoint's fresh twin passes every field)
        cls, hparams = _CLASSES[name], {}
    else:
        raise SciformerError(f"unknown model {name!r}; registered: {', '.join(names()) or '(none)'}")
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = set(overrides) - fields
    if unknown:
        raise SciformerError(
            f"{name}: unknown option(s) {sorted(unknown)}; valid options: {', '.join(sorted(fields))}"
        )
    return cls.config_class(**{**hparams, **overrides})


def get(name: str, **overrides: Any) -> nn.Module:
    """Build a registered size, e.g. ``get("scot-t", in_channels=4, out_channels=4, image_size=128)``."""
    cfg = config(name, **overrides)
    return model_class(name)(cfg)
