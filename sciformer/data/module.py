"""Base LightningDataModule: every data module tells the task what it serves through ``spec``."""

from __future__ import annotations

from typing import Any

import lightning as L


class DataModule(L.LightningDataModule):
    """A DataModule whose ``spec`` (channels, variable names, statistics, ...) the CLI links into the task.

    ``spec`` must be cheap (metadata only) and JSON-serialisable: it is stored in every checkpoint.
    """

    @property
    def spec(self) -> dict[str, Any]:
        return {}
