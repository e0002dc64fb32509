"""``sciformer rollout``: one command for both kinds of store. It reads the store's layout and hands over to
the field rollout (``fields``: operator checkpoints on gridded stores) or the series rollout (``series``:
forecasting checkpoints on series stores), so that those two never import each other.
"""

from __future__ import annotations

from pathlib import Path

from sciformer.errors import ConfigError, DataError
from sciformer.rollout.fields import rollout_fields
from sciformer.rollout.series import rollout_series


def is_series_store(data) -> bool:
    from sciformer.data.commands import store_layout

    return Path(str(data)).is_dir() and (Path(str(data)) / "zarr.json").exists() and store_layout(data) == "series"


def check_flags(*, split, steps, mode, jump, stride, start, history, trajectories, batch_size, blowup_factor,
                correlation_threshold, splits) -> None:
    """Refuse flag values that cannot work, naming the flag, before any checkpoint or store is read."""
    from sciformer.rollout.plan import MODES

    def positive(flag, value):
        if value is not None and int(value) < 1:
            raise ConfigError(f"--{flag} {value}: must be ≥ 1")

    for flag, value in (("steps", steps), ("jump", jump), ("stride", stride), ("history", history),
                        ("trajectories", trajectories), ("batch_size", batch_size)):
        positive(flag, value)
    if start < 0:
        raise ConfigError(f"--start {start}: must be ≥ 0 (the snapshot of the initial condition)")
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if split not in ("train", "val", "test", "all"):
        raise ConfigError(f"--split {split!r}: use train, val, test or all")
    if not blowup_factor > 0:
        raise ConfigError(f"--blowup_factor {blowup_factor}: must be > 0 (inf: stop only on non-finite values)")
    if not 0 <= correlation_threshold <= 1:
        raise ConfigError(f"--correlation_threshold {correlation_threshold}: must lie in [0, 1]")
    if len(splits) != 3 or any(f < 0 for f in splits) or abs(sum(splits) - 1) > 1e-6:
        raise ConfigError(f"--splits {list(splits)}: three non-negative train/val/test fractions summing to 1")


def rollout(*, ckpt: Path, data: Path, split: str = "test", steps: int | None = None, mode: str = "ar",
            jump: int = 2, stride: int = 1, start: int = 0, history: int | None = None,
            trajectories: int | None = None, batch_size: int = 16, device: str = "auto", bf16: bool = False,
            compile: bool = False, blowup_factor: float = 10.0, correlation_threshold: float = 0.8,
            plot_steps: list[int] | None = None, pad_missing: bool = False,
            splits: tuple[float, float, float] = (0.8, 0.1, 0.1), logger: str = "none",
            out: Path = Path("runs/rollout/rollout.zarr")) -> Path:
    """Roll a trained operator model out over a store's trajectories; write predictions, metrics and plots.

    Writes OUT (an xarray Dataset as zarr, atomically: predicted and true fields per trajectory and step, the
    initial condition, VRMSE/nRMSE/Pearson correlation per trajectory, step and variable, the blow-up step),
    and beside it summary.json and the plots error_growth.png, snapshots.png, spectra.png (use one directory
    per rollout). Metrics are computed on de-normalised (physical) fields, only at steps with ground truth.

    Args:
        ckpt: a Lightning checkpoint (.ckpt) or an export directory (`sciformer export`); its data spec
            (variables, normalisation statistics) must match the store's variables by name.
        data: the store (zarr) or an external file (Poseidon NetCDF, The Well / PDEBench HDF5).
        split: train | val | test | all (trajectory splits as in training, see --splits).
        steps: rollout steps (default: as many as the store has ground truth; more is allowed: the steps
            beyond the truth are predicted but not scored).
        mode: ar (chain one-step predictions), direct (one jump from the initial condition to every step;
            time-conditioned models), mixed (jumps of --jump steps).
        jump: steps per jump in mixed mode.
        stride: store snapshots per rollout step (the fixed lead time of ar mode).
        start: snapshot of the initial condition.
        history: past frames the model takes (default: the checkpoint's data spec, else 1).
        trajectories: roll out only the first N trajectories of the split.
        batch_size: trajectories rolled out together.
        device: auto (CUDA, MPS, else CPU), cpu, cuda, cuda:1, ...
        bf16: bfloat16 autocast for the model (the carried state stays float32).
        compile: torch.compile the model.
        blowup_factor: a trajectory stops when a prediction is non-finite or leaves its data range widened
            this many times about its centre (inf: finiteness only).
        correlation_threshold: correlation time = first step where the mean correlation falls below this.
        plot_steps: steps shown in the snapshot and spectrum plots (default: first, 1/3, 2/3, last).
        pad_missing: hold variables the model knows but the store lacks at their mean (mixture padding).
        splits: train/val/test fractions of the trajectories (as the data module's).
        logger: none | tensorboard (events beside OUT, in tensorboard/) | wandb (offline unless WANDB_MODE says
            otherwise): the plots also go there as images, the metrics as a table and per-step scalars.
        out: output dataset (*.zarr).

    Example:
        sciformer rollout --ckpt runs/scot/last.ckpt --data data/ns-sines.zarr --split test --mode ar --out runs/rollout/ar/rollout.zarr
        sciformer rollout --ckpt exports/scot-t --data data/ns-sines.zarr --mode direct --steps 40 --out runs/rollout/direct/rollout.zarr
        sciformer rollout --ckpt exports/scot-t --data data/ns-sines.zarr --mode mixed --jump 4 --bf16 true --out runs/rollout/mixed/rollout.zarr
    """
    check_flags(split=split, steps=steps, mode=mode, jump=jump, stride=stride, start=start, history=history,
                trajectories=trajectories, batch_size=batch_size, blowup_factor=blowup_factor,
                correlation_threshold=correlation_threshold, splits=splits)
    from sciformer import loggers

    loggers.check(logger)
    if is_series_store(data):  # a forecasting model: roll its horizon forward over the series' windows
        if steps is None:
            raise DataError(f"{data} is a series store: give --steps (the forecast length to roll out to)")
        summary_file = Path(out).parent / "summary.json"
        res = rollout_series(ckpt, data, length=steps, split=split, batch_size=batch_size, out=summary_file)
        print(f"series rollout: {res['windows']} windows, {steps} steps; summary: {summary_file}")
        return summary_file
    path = rollout_fields(ckpt=ckpt, data=data, split=split, steps=steps, mode=mode, jump=jump, stride=stride,
                          start=start, history=history, trajectories=trajectories, batch_size=batch_size,
                          device=device, bf16=bf16, compile=compile, blowup_factor=blowup_factor,
                          correlation_threshold=correlation_threshold, plot_steps=plot_steps,
                          pad_missing=pad_missing, splits=splits, out=out)
    if (log := loggers.open_logger(logger, Path(out).parent, f"rollout {Path(out).parent.name}")) is not None:
        import json

        from sciformer.rollout.output import log_outputs

        try:
            log_outputs(log, Path(out).parent, json.loads((Path(out).parent / "summary.json").read_text()))
        finally:
            log.close()
    return path
