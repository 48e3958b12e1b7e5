"""Cases for the samplers: :class:`CaseArrays` (image + label arrays of one case), in memory or
streamed from the preprocessing cache (:class:`~tfmedseg.preprocessing.cache.CachedArray`)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from tfmedseg.errors import InvalidInputError

__all__ = ["CaseArrays", "as_case_arrays", "cases_from_cache", "slice_foreground"]


@dataclasses.dataclass
class CaseArrays:
    """The preprocessed arrays of one case, as the samplers read them.

    Attributes:
        case_id: Case identifier (named in errors).
        image: ``[D, H, W]`` or ``[D, H, W, C]`` preprocessed image; stored as float32
            ``[D, H, W, C]`` (a channel axis of 1 is added).
        label: ``[D, H, W]`` integer label map (0 = background), or None (unlabeled).

    Either may be a :class:`~tfmedseg.preprocessing.cache.CachedArray` (from
    :meth:`~tfmedseg.preprocessing.cache.CaseCache.lazy_arrays`): it stays on disk, presented as
    float32 ``[D, H, W, C]`` / int32, and the samplers read only the slices of each sample.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None = None

    def __post_init__(self) -> None:
        if _is_lazy(self.image):
            self._post_init_lazy()
            return
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

    def _post_init_lazy(self) -> None:
        image = self.image
        if image.ndim not in (3, 4):
            raise InvalidInputError(f"image must be [D, H, W] or [D, H, W, C], got {image.shape}", path=self.case_id)
        self.image = image.view(dtype=np.float32, channel=image.ndim == 3)
        if self.label is not None:
            label = self.label if _is_lazy(self.label) else np.asarray(self.label)
            if tuple(label.shape) != tuple(self.image.shape[:3]):
                raise InvalidInputError(f"label {label.shape} does not match the image {self.image.shape[:3]}", path=self.case_id)
            self.label = label.view(dtype=np.int32) if _is_lazy(label) else label.astype(np.int32, copy=False)

    @property
    def streamed(self) -> bool:
        """True when the image is read from disk per sample (not held in memory)."""
        return _is_lazy(self.image)

    @property
    def depth(self) -> int:
        """Number of slices D."""
        return int(self.image.shape[0])


def _is_lazy(array) -> bool:
    from tfmedseg.preprocessing.cache import CachedArray

    return isinstance(array, CachedArray)


def slice_foreground(label, chunk: int = 32) -> np.ndarray:
    """bool ``[D]``: whether each slice of a ``[D, ...]`` label map (array or streamed) holds foreground,
    read ``chunk`` slices at a time."""
    depth = int(label.shape[0])
    return np.concatenate([np.asarray(label[z: z + chunk]).reshape(min(chunk, depth - z), -1).any(axis=1)
                           for z in range(0, depth, chunk)]) if depth else np.zeros(0, bool)


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


def cases_from_cache(cache, case_ids: Sequence[str], image_key: str = "image", label_key: str = "label", *,
                     stream: bool = False) -> list[CaseArrays]:
    """Cached cases (:class:`tfmedseg.preprocessing.cache.CaseCache`) as :class:`CaseArrays`: loaded
    into memory, or with ``stream`` as :class:`~tfmedseg.preprocessing.cache.CachedArray` s read per
    sample."""
    out = []
    for case_id in case_ids:
        entry = cache.load(case_id) if not stream else None
        if stream:
            arrays = cache.lazy_arrays(case_id)
            if image_key not in arrays:
                raise InvalidInputError(f"cached case has no array {image_key!r}", path=cache.path(case_id))
            out.append(CaseArrays(case_id, arrays[image_key], arrays.get(label_key)))
            continue
        if image_key not in entry.arrays:
            raise InvalidInputError(f"cached case has no array {image_key!r}", path=cache.path(case_id))
        out.append(CaseArrays(case_id, entry.arrays[image_key], entry.arrays.get(label_key)))
    return out
