"""tfmedseg.clinical."""
