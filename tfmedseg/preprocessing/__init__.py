"""tfmedseg.preprocessing."""
