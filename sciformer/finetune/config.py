"""What a sweep is given (``SweepConfig``) and what each kind of store adds to the one sweep (``SweepKind``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciformer.adaptation import check_mode
from sciformer.errors import ConfigError, SciformerError
from sciformer.precision import check_precision

# OperatorTask arguments the sweep sets itself; task_options may not override them
SWEEP_TASK_ARGS = ("model", "model_options", "pretrained", "finetune_mode", "lr", "lr_embedding_recovery",
                   "lr_time_embedding", "loss", "data_spec")


@dataclass
class SweepConfig:
    """What every cell of a sweep gets: the same budget and evaluation for the fine-tuned model and baselines.

    Fields left ``None`` take the defaults of the store's kind (``SweepKind.defaults``), so a field sweep keeps
    Poseidon's learning rates and a series sweep the iTransformer protocol's.
    """

    samples: list[int]
    baselines: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 20
    batch_size: int | None = None
    mode: str = "full"
    lr: float | None = None
    lr_embedding_recovery: float = 5e-4
    lr_time_embedding: float = 5e-4
    scratch_lr: float | None = None
    precision: str = "32-true"
    num_workers: int = 0
    # fields
    sampler: str = "all2all"
    time_stride: int = 1  # use every k-th stored snapshot (all2all pairs grow with the square of the count)
    loss: str = "rel_l1"
    fno_model: str = "fno-2d"  # registered FNO size of the "fno" baseline (neuraloperator)
    # recipe options of the fine-tuned cells only (baselines keep the default recipe, so one set of baseline
    # cells serves every pretraining variant): extra OperatorTask arguments, and the data normalisation
    task_options: dict[str, Any] | None = None
    normalization: str = "zscore"
    # series
    seasonality: int | None = None  # period of the seasonal-naive baseline and of MASE (default: the store's)
    # atoms
    properties: list[str] | None = None  # the property to fine-tune on (default: the one the checkpoint knows)
    test_data: str | None = None  # a separate test store (default: the held-out part of the data)

    def __post_init__(self):  # refused before any training starts
        check_mode(self.mode)
        check_precision(self.precision)
        if not self.samples or min(self.samples) < 1:
            raise SciformerError(f"--samples must list positive counts, got {self.samples}")
        if not self.seeds:
            raise SciformerError("--seeds must list at least one seed")
        for name in ("epochs", "batch_size", "time_stride", "seasonality"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SciformerError(f"--{name} must be ≥ 1, got {value}")
        if self.normalization not in ("zscore", "rms"):
            raise ConfigError(f"normalization: {self.normalization!r}; use 'zscore' or 'rms'")
        if self.task_options is not None:
            if not isinstance(self.task_options, dict):
                raise ConfigError(f"task_options must be a mapping of OperatorTask arguments, got {self.task_options!r}")
            taken = sorted(set(self.task_options) & set(SWEEP_TASK_ARGS))
            if taken:
                raise ConfigError(f"task_options: {taken} are set by the sweep itself; use the SweepConfig fields")


Cell = Callable[[Path, Path, int, str, int, SweepConfig, Path], dict[str, float]]


@dataclass(frozen=True)
class SweepKind:
    """How one kind of store is swept: what ``--samples`` counts, which baselines exist, how a cell is built
    and scored. Everything else (resume, refusals, AG/EG, report, plots) is shared."""

    layout: str  # the store layout it reads
    model_kind: str  # the checkpoint kind it fine-tunes (FamilySpec.kind)
    unit: str  # what --samples counts
    metric: str  # the headline error (lower is better), AG and EG are computed on it
    metric_text: str  # its definition, for the report
    baselines: tuple[str, ...]  # every baseline this kind offers
    defaults: dict[str, Any]  # SweepConfig fields left None
    run_cell: Cell  # (ckpt, data, n, kind, seed, cfg, workdir) -> metrics of one cell
    variables: Callable[[Any, Path, SweepConfig], dict[str, list[str]]]  # what the fine-tuned model reuses
    tables: tuple[str, ...] = ()  # prefixes of further metrics that get a table
    definitions: dict[str, str] = field(default_factory=dict)  # metric suffix -> definition
    prepare: Callable[[SweepConfig, Path, Any], SweepConfig] | None = None  # defaults from the store and checkpoint

    def resolve(self, cfg: SweepConfig) -> SweepConfig:
        """``cfg`` with this kind's defaults filled in, its baselines checked."""
        import dataclasses

        filled = {k: v for k, v in self.defaults.items() if getattr(cfg, k) is None}
        cfg = dataclasses.replace(cfg, **filled)
        if self.layout != "fields" and (cfg.task_options or cfg.normalization != "zscore"):
            raise ConfigError(f"task_options and normalization apply to field sweeps; this is a {self.layout} store")
        unknown = [b for b in cfg.baselines if b not in self.baselines]
        if unknown:
            raise SciformerError(f"unknown baseline(s) {unknown} for a {self.layout} store; choose from "
                                 f"{', '.join(self.baselines)}")
        return cfg
