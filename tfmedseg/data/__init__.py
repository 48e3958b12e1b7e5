"""tfmedseg.data."""
