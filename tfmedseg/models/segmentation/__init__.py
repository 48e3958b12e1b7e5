"""tfmedseg.models.segmentation."""
