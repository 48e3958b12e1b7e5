"""tfmedseg.models."""
