"""tfmedseg.training."""
