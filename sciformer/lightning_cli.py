"""LightningCLI for sciformer: subclass mode for tasks and data, data spec linked into the task."""

from __future__ import annotations

import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import Logger

from sciformer.data.module import DataModule
from sciformer.tasks.base import BaseTask


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
        it (Lightning #20801). A checkpoint of another model is refused by ``BaseTask.on_load_checkpoint``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.spec", "model.init_args.data_spec", apply_on="instantiate")
        try:
            parser.set_defaults(weights_only=True)  # resume without unpickling code
        except KeyError:  # subcommands without a checkpoint argument
            pass
