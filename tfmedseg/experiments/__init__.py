"""tfmedseg.experiments."""
