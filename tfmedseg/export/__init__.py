"""tfmedseg.export."""
