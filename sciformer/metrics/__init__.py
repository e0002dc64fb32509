"""Physics-aware metrics (fields, spectra, conservation, rollout, molecules, crystals, forecasts)."""
