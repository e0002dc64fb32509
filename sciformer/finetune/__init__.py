"""Fine-tuning sweeps (above the tasks): one sample-count sweep for field, series and atom stores, Poseidon's
gains, the report. Each kind of store adds only how a cell is built and scored (``fields``, ``series``, ``atoms``).

Adapting a checkpoint to new variables lives below the tasks, in ``sciformer.adaptation``.
"""

from sciformer.finetune.config import SweepConfig, SweepKind
from sciformer.finetune.fields import METRIC
from sciformer.finetune.gains import accuracy_gain, efficiency_gain
from sciformer.finetune.sample_sweep import KINDS, sweep

__all__ = ["KINDS", "METRIC", "SweepConfig", "SweepKind", "accuracy_gain", "efficiency_gain", "sweep"]
