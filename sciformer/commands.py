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


def finetune(
    *,
    ckpt: Path,
    data: Path,
    samples: list[int] | None = None,
    baseline: list[str] | None = None,
    seeds: list[int] | None = None,
    epochs: int = 20,
    batch_size: int = 16,
    mode: str = "full",
    lr: float = 5e-5,
    lr_embedding_recovery: float = 5e-4,
    lr_time_embedding: float = 5e-4,
    scratch_lr: float = 5e-4,
    precision: str = "32-true",
    num_workers: int = 0,
    fno_model: str = "fno-2d",
    time_stride: int = 1,
    out: Path = Path("runs/finetune"),
) -> None:
    """Fine-tune a pretrained checkpoint on N trajectories of a store, for several N, against baselines.

    Every cell (sample count × model × seed) gets the same budget and is tested on the same test split. A
    killed sweep resumes from its finished cells (rerun the same command). Writes OUT/results.json,
    OUT/report.md (errors, accuracy gain AG and efficiency gain EG) and OUT/error_vs_samples.png.

    Example:
        sciformer finetune --ckpt runs/pretrain/last.ckpt --data data/wave.zarr --samples 8,32,128 --baseline scratch --out runs/ft-wave
        sciformer finetune --ckpt exports/scot-t --data data/ac.zarr --samples 4,16 --seeds 0,1,2 --mode lora

    Args:
        ckpt: pretrained Lightning checkpoint or export/convert directory.
        data: the downstream field store (its train split is subsampled, its test split is used for scoring).
        samples: training-trajectory counts (default 8,32); --samples 8,32 or --samples 8 --samples 32.
        baseline: baselines trained with the same budget: scratch (the checkpoint's architecture, fresh weights;
            for every source, converted Poseidon checkpoints included) and/or fno (neuraloperator's FNO, size
            --fno_model); --baseline scratch --baseline fno or --baseline scratch,fno; default: scratch.
        seeds: seeds (default 0; report ≥ 3 for claims), as --seeds 0,1,2.
        epochs: epochs per cell (same for every model).
        batch_size: batch size per cell.
        mode: full | frozen-latent | lora.
        lr: learning rate of the pretrained latent (Poseidon fine-tuning default 5e-5).
        lr_embedding_recovery: learning rate of the re-initialised embedding and recovery.
        lr_time_embedding: learning rate of the time-conditioning parameters.
        scratch_lr: learning rate of the from-scratch baseline.
        precision: Lightning precision (32-true, bf16-mixed, ...).
        num_workers: DataLoader workers.
        fno_model: registered FNO size of the fno baseline (fno-2d, fno-2d-tiny).
        time_stride: use every k-th stored snapshot (all2all pairs grow with the square of the count).
        out: output directory.
    """
    from sciformer.finetune import SweepConfig, sweep

    cfg = SweepConfig(samples=samples or [8, 32], baselines=baseline or ["scratch"], seeds=seeds or [0], epochs=epochs,
                      batch_size=batch_size, mode=mode, lr=lr, lr_embedding_recovery=lr_embedding_recovery,
                      lr_time_embedding=lr_time_embedding, scratch_lr=scratch_lr, precision=precision,
                      num_workers=num_workers, fno_model=fno_model, time_stride=time_stride)
    sweep(ckpt, data, cfg, out)
    print((out / "report.md").read_text())
    print(f"results: {out / 'results.json'}  report: {out / 'report.md'}  plot: {out / 'error_vs_samples.png'}")

