"""sciformer: operator, time-series and atomistic transformers for science on one Lightning pipeline."""

__version__ = "0.1.0"
