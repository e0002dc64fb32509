"""One cell's training and testing, the same Lightning setup for every kind of sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sciformer.finetune.config import SweepConfig


def train_and_test(task, dm, cfg: SweepConfig, celldir: Path, test_loader: Any = None, **trainer_options):
    """Fit ``task`` for ``cfg.epochs`` on ``dm``, test it (on ``test_loader`` if given, else the data module's
    test split), keep the weights as ``celldir/model.ckpt`` (for rollout and export); returns the test metrics."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from sciformer.io import atomic_path
    from sciformer.precision import trainer_precision

    trainer = L.Trainer(max_epochs=cfg.epochs, logger=CSVLogger(celldir.parent, name=celldir.name),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="auto", devices=1, num_sanity_val_steps=0, deterministic=False,
                        **trainer_precision(cfg.precision), **trainer_options)
    trainer.fit(task, datamodule=dm)
    if test_loader is None:
        metrics = trainer.test(task, datamodule=dm, verbose=False)[0]
    else:
        metrics = trainer.test(task, dataloaders=test_loader, verbose=False)[0]
    with atomic_path(celldir / "model.ckpt") as tmp:
        trainer.save_checkpoint(tmp, weights_only=True)
    return {k: float(v) for k, v in metrics.items()}
