"""tfmedseg.inference."""
