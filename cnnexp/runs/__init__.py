"""Everything about a run's folder: its name, metrics, checkpoints and summary."""
