"""In-memory cases for the samplers: :class:`CaseArrays` (image + label arrays of one case)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["CaseArrays", "as_case_arrays", "cases_from_cache"]


@dataclasses.dataclass
class CaseArrays:
    """The preprocessed arrays of one case, as the samplers read them.

    Attributes:
        case_id: Case identifier (named in errors).
        image: ``[D, H, W]`` or ``[D, H, W, C]`` preprocessed image; stored as float32
            ``[D, H, W, C]`` (a channel axis of 1 is added).
        label: ``[D, H, W]`` integer label map (0 = background), or None (unlabeled).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None

    def __post_init__(self) -> None:
        image = np.asarray(self.image, dtype=np.float32)
        if image.ndim == 3:
            image = image[..., None]
        if image.ndim != 4:
            raise InvalidInputError(f"image must be [D, H, W] or [D, H, W, C], got {image.shape}", path=self.case_id)
        self.image = image
        if self.label is not None:
            label = np.asarray(self.label)
            if label.shape != image.shape[:3]:
                raise InvalidInputError(f"label {label.shape} does not match the image {image.shape[:3]}", path=self.case_id)
            self.label = label.astype(np.int32, copy=False)

    @property
    def depth(self) -> int:
        """Number of slices D."""
        return int(self.image.shape[0])


def as_case_arrays(cases: Sequence) -> list[CaseArrays]:
    """Accept :class:`CaseArrays`, ``(case_id, image, label)`` tuples or dicts with those keys."""
    out = []
    for i, case in enumerate(cases):
        if isinstance(case, CaseArrays):
            out.append(case)
        elif isinstance(case, dict):
            out.append(CaseArrays(str(case.get("case_id", i)), case["image"], case.get("label")))
        else:
            out.append(CaseArrays(*case))
    if not out:
        raise InvalidInputError("no cases given", path="cases")
    return out


def cases_from_cache(cache, case_ids: Sequence[str], image_key: str = "image", label_key: str = "label") -> list[CaseArrays]:
    """Load cached cases (:class:`tfmedseg.preprocessing.cache.CaseCache`) as :class:`CaseArrays`."""
    out = []
    for case_id in case_ids:
        entry = cache.load(case_id)
        if image_key not in entry.arrays:
            raise InvalidInputError(f"cached case has no array {image_key!r}", path=cache.path(case_id))
        out.append(CaseArrays(case_id, entry.arrays[image_key], entry.arrays.get(label_key)))
    return out
