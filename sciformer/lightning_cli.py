"""LightningCLI for sciformer: subclass mode for tasks and data, data spec linked into the task."""

from __future__ import annotations

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger

from sciformer.data.module import DataModule
from sciformer.errors import CheckpointError
from sciformer.tasks.base import BaseTask

# --ckpt_path values Lightning resolves itself (from the run directory or a registry)
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")


def check_ckpt_path(ckpt_path) -> None:
    """``--ckpt_path FILE`` must name a readable Lightning checkpoint (a zip archive written by ``torch.save``)."""
    import zipfile
    from pathlib import Path

    if not ckpt_path or "://" in str(ckpt_path) or str(ckpt_path).split(":")[0] in SPECIAL_CKPT_PATHS:
        return
    path = Path(ckpt_path)
    if path.is_dir() and (path / "meta.pt").is_file():  # a sharded checkpoint (ModelParallelStrategy): resumable
        return
    if path.is_dir():
        raise CheckpointError(f"--ckpt_path {path}: a directory; give the .ckpt file written by `sciformer fit` "
                              "(an export directory is for `sciformer finetune`/`rollout`, not for resuming)")
    if not path.is_file():
        raise CheckpointError(f"--ckpt_path {path}: no such checkpoint file; give a .ckpt written by `sciformer fit` "
                              "or `last` to resume from the run's last checkpoint")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"--ckpt_path {path}: not a readable checkpoint (corrupt, truncated or not a PyTorch "
                              "file); use another checkpoint of the run")


class SaveConfigToLogger(SaveConfigCallback):
    """Save ``config.yaml`` (overwriting) and send the full resolved config to the logger."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, Logger):
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            trainer.logger.log_hyperparams({"cli": config})


class SciformerCLI(LightningCLI):
    def __init__(self, args=None, run: bool = True, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            BaseTask,
            DataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigToLogger,
            trainer_defaults={
                "default_root_dir": "runs",
                # our ResumableLoader shards across ranks itself (and stays resumable)
                "use_distributed_sampler": False,
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            },
            seed_everything_default=0,
            parser_kwargs={"parser_mode": "yaml"},
            args=args,
            run=run,
            **kwargs,
        )

    def _parse_ckpt_path(self) -> None:
        """Keep the run's own config: Lightning would let hyper-parameters stored in ``--ckpt_path`` override
        it (Lightning #20801). A checkpoint of another model is refused by ``BaseTask.on_load_checkpoint``.
        Here, before anything is built, a missing or unreadable ``--ckpt_path`` file is refused."""
        if not self.config.get("subcommand"):  # run=False: nothing is fitted, no checkpoint to check
            return
        check_ckpt_path(self.config[self.config.subcommand].get("ckpt_path"))

    def _run_subcommand(self, subcommand: str) -> None:
        from lightning.pytorch.trainer.states import TrainerStatus

        try:
            super()._run_subcommand(subcommand)
        except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
            if self.trainer.state.status == TrainerStatus.INTERRUPTED:
                raise KeyboardInterrupt from None
            raise

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """``--trainer.plugins sciformer.precision.BF16MasterWeights`` is the run's precision: the
        ``trainer.precision`` a config fragment sets (``32-true``) gives way, as Lightning takes only one."""
        from sciformer.precision import BF16MasterWeights

        plugins = config.get("plugins")
        if any(isinstance(p, BF16MasterWeights) for p in (plugins if isinstance(plugins, list) else [plugins])):
            config = {**config, "precision": None}
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.spec", "model.init_args.data_spec", apply_on="instantiate")
        try:
            parser.set_defaults(weights_only=True)  # resume without unpickling code
        except KeyError:  # subcommands without a checkpoint argument
            pass
