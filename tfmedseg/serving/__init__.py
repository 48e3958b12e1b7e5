"""tfmedseg.serving."""
