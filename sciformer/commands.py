"""Typed functions behind the `sciformer` subcommands (jsonargparse builds their --help)."""

from __future__ import annotations

import platform
from pathlib import Path


def export(ckpt: Path, out: Path) -> None:
    """Write a trained model as ``OUT/model.safetensors`` + ``OUT/config.json``.

    The normalisation statistics and variable names of the training data go into config.json, so
    ``sciformer.models.load(OUT)`` gives a model that knows its inputs.

    Example:
        sciformer export runs/lightning_logs/version_0/checkpoints/last.ckpt exports/scot-tiny

    Args:
        ckpt: a Lightning checkpoint written by `sciformer fit`.
        out: directory to write (replaced atomically if it exists).
    """
    from sciformer.checkpoints import export_checkpoint

    path = export_checkpoint(ckpt, out)
    print(f"exported {ckpt} -> {path}")


def info() -> None:
    """Print versions, devices and the registered models and data sets.

    Example:
        sciformer info
    """
    import lightning
    import torch

    from sciformer import __version__, models
    from sciformer.data.commands import BUILDERS, CONVERTERS

    print(f"sciformer {__version__}  python {platform.python_version()}  torch {torch.__version__}  "
          f"lightning {lightning.__version__}")
    devices = [f"cpu ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    print("devices: " + ", ".join(devices))
    print("models: " + (", ".join(models.names()) or "(none)"))
    print("data builders: " + (", ".join(sorted(BUILDERS)) or "(none)"))
    print("data formats: " + (", ".join(sorted(CONVERTERS)) or "(none)"))
