"""The dataset-independent record every loader returns: :class:`Case` (and :class:`Instance`).

An experiment never parses a file: it asks a loader in :mod:`tfmedseg.datasets` for a list of
cases and works with their :class:`~tfmedseg.io.volume.Volume` channels, label maps and instances.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator

import numpy as np

from tfmedseg.io.volume import Volume

__all__ = ["Case", "Instance", "LESION_CLASSES", "released_after"]

#: Seed-001 lesion classes, in the order of the seed's confusion matrices (class id = index + 1).
LESION_CLASSES = ("malignant", "infection_inflammation", "degenerative", "post_trauma")


@dataclasses.dataclass
class Instance:
    """One annotated object on a 2D image (a bone-scan lesion, a chest box).

    Attributes:
        view: Which image channel of the case it lies on (``"anterior"`` or ``"posterior"``).
        class_name: One of :data:`LESION_CLASSES` for lesions, ``"chest"`` for the chest box.
        box: ``(y0, x0, y1, x1)`` in pixels of that view, ``y1``/``x1`` exclusive.
        mask: ``[H, W]`` bool mask on the full view, or None for box-only objects.
    """

    view: str
    class_name: str
    box: tuple[float, float, float, float]
    mask: np.ndarray | None = None


@dataclasses.dataclass
class Case:
    """One patient / study.

    Attributes:
        case_id: Stable identifier (``"lits-003"``, ``"CHGJ007"``, ...).
        images: Channel name -> Volume, all on one grid unless the dataset says otherwise
            (``"ct"``, ``"pt"``, ``"spect"``, ``"anterior"``, ``"posterior"``).
        label: Label map on the grid of the first image (``modality="SEG"``), or None when unlabeled.
        instances: Object annotations for detection datasets, or None when unlabeled.
        meta: Dataset-specific extras (bounding boxes, source paths, split hints, ...).
    """

    case_id: str
    images: dict[str, Volume]
    label: Volume | None = None
    instances: list[Instance] | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_labeled(self) -> bool:
        """True when the case has a label map or an instance annotation."""
        return self.label is not None or self.instances is not None

    @property
    def volumes(self) -> list[Volume]:
        """Every image channel and the label map (when present)."""
        return list(self.images.values()) + ([self.label] if self.label is not None else [])

    def release(self) -> None:
        """Drop the voxels of lazily read volumes (:class:`~tfmedseg.io.lazy.LazyVolume`) and the
        values of lazy ``meta`` entries (:class:`~tfmedseg.io.lazy.LazyMapping`, e.g. seed 000's
        display images); they are read again when next used. Eager volumes are kept. Loops over many
        cases call this after each case so that one case's voxels are held at a time."""
        from tfmedseg.io.lazy import release_volumes

        release_volumes(*self.volumes, *self.meta.values())

    def image(self, name: str | None = None) -> Volume:
        """The channel ``name``, or the first channel."""
        if name is None:
            return next(iter(self.images.values()))
        return self.images[name]


def released_after(cases: Iterable, desc: str, unit: str = "case") -> Iterator:
    """Iterate over ``cases`` with progress (:func:`tfmedseg.progress.progress`), releasing each
    case's lazily read voxels (:meth:`Case.release`) when the loop moves on: one case in memory at a time."""
    from tfmedseg.progress import progress

    for case in progress(cases, desc=desc, unit=unit):
        yield case
        if hasattr(case, "release"):
            case.release()
