"""tfmedseg.losses."""
