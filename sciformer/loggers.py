"""Sending a command's plots and tables to an experiment logger, beside the files it writes.

``sciformer finetune`` and ``sciformer rollout`` always write PNGs, markdown and JSON; with ``--logger tensorboard``
or ``--logger wandb`` the same plots also go to the logger as images and the same tables as tables, so they sit
next to the training curves. TensorBoard events go to ``<dir>/tensorboard`` (``tensorboard --logdir`` on it);
TensorBoard has no table type, so a table is a markdown table in its Text tab (it renders them). wandb runs
offline unless ``WANDB_MODE`` says otherwise (``wandb sync`` uploads later), in ``<dir>/wandb``, project
``WANDB_PROJECT`` (default ``sciformer``). A Lightning logger of a run (``TensorBoardLogger``, ``WandbLogger``)
can be reused with ``from_lightning``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sciformer.errors import ConfigError

LOGGERS = ("none", "tensorboard", "wandb")


def check(kind: str) -> None:
    if kind not in LOGGERS:
        raise ConfigError(f"--logger {kind!r}: use one of {', '.join(LOGGERS)}")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return format(v, ".6g") if isinstance(v, float) else ("—" if v is None else str(v))

    return "\n".join(["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|",
                      *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)])


class ReportLogger:
    """Images, tables and scalars to one logger; ``close`` flushes."""

    def image(self, tag: str, png: Path, step: int = 0) -> None:
        raise NotImplementedError

    def table(self, tag: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int = 0) -> None:
        raise NotImplementedError

    def scalar(self, tag: str, value: float, step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _rgb(png: Path):
    import matplotlib.image as mpimg
    import numpy as np

    a = mpimg.imread(str(png))  # float [0, 1] for PNG
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return (np.clip(a[..., :3], 0, 1) * 255).astype(np.uint8)


class TensorBoard(ReportLogger):
    def __init__(self, writer, own: bool = True):
        self.writer, self.own = writer, own

    def image(self, tag, png, step=0):
        self.writer.add_image(tag, _rgb(png), step, dataformats="HWC")

    def table(self, tag, columns, rows, step=0):
        self.writer.add_text(tag, markdown_table(columns, rows), step)

    def scalar(self, tag, value, step):
        self.writer.add_scalar(tag, value, step)

    def close(self):
        self.writer.flush()
        if self.own:
            self.writer.close()


class Wandb(ReportLogger):
    def __init__(self, run, own: bool = True):
        self.run, self.own = run, own

    def image(self, tag, png, step=0):
        import wandb

        self.run.log({tag: wandb.Image(str(png))})

    def table(self, tag, columns, rows, step=0):
        import wandb

        self.run.log({tag: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def scalar(self, tag, value, step):
        self.run.log({tag: value, f"{tag.rsplit('/', 1)[0]}/step": step})

    def close(self):
        if self.own:
            self.run.finish()


def open_logger(kind: str, directory: str | os.PathLike, name: str) -> ReportLogger | None:
    """A logger writing under ``directory`` (None for ``none``)."""
    check(kind)
    directory = Path(directory)
    if kind == "none":
        return None
    if kind == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        return TensorBoard(SummaryWriter(log_dir=str(directory / "tensorboard")))
    try:
        import wandb
    except ImportError:
        raise ConfigError("--logger wandb: wandb is not installed (pip install wandb), or use --logger "
                          "tensorboard") from None
    directory.mkdir(parents=True, exist_ok=True)  # wandb writes directory/wandb/
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sciformer"), name=name, dir=str(directory),
                     mode=os.environ.get("WANDB_MODE", "offline"), reinit="finish_previous")
    return Wandb(run)


def from_lightning(logger) -> ReportLogger | None:
    """The plots/tables interface over a Lightning logger of a run (TensorBoard or wandb; else None)."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, TensorBoardLogger):
        return TensorBoard(logger.experiment, own=False)
    if isinstance(logger, WandbLogger):
        return Wandb(logger.experiment, own=False)
    return None
