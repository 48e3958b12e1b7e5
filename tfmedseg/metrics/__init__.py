"""tfmedseg.metrics."""
