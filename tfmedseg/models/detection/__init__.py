"""tfmedseg.models.detection."""
