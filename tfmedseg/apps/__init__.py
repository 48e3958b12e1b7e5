"""End-user programs on exported models (seed 003's DICOM-in -> DICOM-out liver lesion tool)."""
