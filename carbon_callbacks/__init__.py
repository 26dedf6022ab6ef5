"""carbon-callbacks: per-epoch energy and CO2e for ML training."""
