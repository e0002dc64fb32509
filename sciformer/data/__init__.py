"""Data: canonical stores, readers of external formats, samplers, normalisation, LightningDataModules."""
