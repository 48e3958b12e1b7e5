"""tfmedseg.augment."""
