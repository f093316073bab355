"""Post-hoc analyses of finished runs (read a run directory, write a JSON next to its results)."""
