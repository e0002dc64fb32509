"""Fine-tuning sweeps (above the tasks): sample-count sweeps against baselines, Poseidon's gains, the report.

Adapting a checkpoint to new variables lives below the tasks, in ``sciformer.adaptation``.
"""

from sciformer.finetune.gains import accuracy_gain, efficiency_gain
from sciformer.finetune.sweep import BASELINES, SweepConfig, sweep

__all__ = ["BASELINES", "SweepConfig", "accuracy_gain", "efficiency_gain", "sweep"]
