"""Synthetic phantoms written in each dataset's real on-disk layout (the embedded default data)."""
