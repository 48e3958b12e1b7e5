"""tfmedseg.models.blocks."""
