"""The result files of segmenting a DICOM series, written into one (staging) folder.

Shared by ``python -m tfmedseg.predict`` and the seed-003 application ``tfmedseg.apps.liver_lesions``:

* ``overlay/``: the RGB overlay series (:func:`tfmedseg.io.dicom_overlay.write_overlay_series`, a new
  series in the same study, one instance per source slice);
* ``label.nii.gz``: the uint8 label map in the source geometry;
* ``seg.dcm``: a DICOM-SEG when ``highdicom`` is installed and something was segmented.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.io.volume import Volume

__all__ = ["write_dicom_outputs"]


def write_dicom_outputs(
    volume: Volume, labels: np.ndarray, out_dir: Path, *, label_names: Sequence[str], name: str,
    opacity: float = 0.3, window="auto", series_number: int | None = None, uid_seed: str | None = None,
    dicom_seg: bool = True,
) -> list[str]:
    """Write ``overlay/``, ``label.nii.gz`` and (optionally) ``seg.dcm`` into ``out_dir``.

    Args:
        volume: The source series (:func:`tfmedseg.io.dicom.read_dicom_series`).
        labels: uint8 ``[D, H, W]`` on ``volume``'s canonical grid.
        out_dir: Folder to write into (normally the staging folder of :func:`tfmedseg.io._atomic.atomic_dir`).
        label_names: Names of labels 0, 1, ... (``liver`` green, ``tumour``/``lesion`` red).
        name: Algorithm / model name for the series descriptions.
        opacity, window, series_number, uid_seed: As :func:`~tfmedseg.io.dicom_overlay.write_overlay_series`
            (the DICOM-SEG gets ``series_number + 1000``).
        dicom_seg: Write the DICOM-SEG when highdicom is installed.

    Returns:
        Notes for the user (why no DICOM-SEG was written), empty when everything was written.
    """
    from tfmedseg.io.dicom_overlay import (
        highdicom_available,
        write_overlay_series,
        write_segmentation_dicom_seg,
    )
    from tfmedseg.io.nifti import write_nifti

    notes: list[str] = []
    write_overlay_series(volume, labels, out_dir / "overlay", label_names=label_names, opacity=opacity, window=window,
                         series_number=series_number, series_description=f"{name} overlay", uid_seed=uid_seed)
    write_nifti(labels, out_dir / "label.nii.gz", reference=volume, dtype=np.uint8)
    if dicom_seg and highdicom_available():
        seg_number = None if series_number is None else series_number + 1000
        try:
            seg_path = write_segmentation_dicom_seg(volume, labels, out_dir / "seg.dcm", label_names=label_names,
                                                    algorithm_name=name, series_number=seg_number,
                                                    series_description=f"{name} segmentation", uid_seed=uid_seed)
        except InvalidInputError as exc:  # the overlay and label map are still written
            notes.append(f"no DICOM-SEG written: {exc}")
        else:
            if seg_path is None:
                notes.append("nothing segmented; no DICOM-SEG written")
    elif dicom_seg:
        notes.append("highdicom is not installed; no DICOM-SEG written (pip install highdicom)")
    return notes
