"""Fine-tuning sweeps (above the tasks): sample-count sweeps against baselines, Poseidon's gains, the report.

Adapting a checkpoint to new variables lives below the tasks, in ``sciformer.adaptation``.
"""

from sciformer.finetune.gains import accuracy_gain, efficiency_gain
from sciformer.finetune.report import METRIC
from sciformer.finetune.sample_sweep import BASELINES, SweepConfig, run_cell, sweep

__all__ = ["BASELINES", "METRIC", "SweepConfig", "accuracy_gain", "efficiency_gain", "run_cell", "sweep"]
