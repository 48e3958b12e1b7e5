"""tfmedseg.models.backbones."""
