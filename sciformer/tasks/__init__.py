"""LightningModules: a model plus its loss, metrics and optimizer groups."""

from sciformer.tasks.base import BaseTask

__all__ = ["BaseTask"]
