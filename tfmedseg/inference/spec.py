"""What an exported segmentation model expects: :class:`ServingSpec`.

The spec travels with the model (``metadata.json``) and drives the in-graph raw-scan signature:
how a raw volume (HU, counts, SUV) is turned into model inputs (intensity mapping, in-plane resize,
2.5D slice stacks, 3D slabs or patches) and how the model output becomes a label map.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfmedseg.config import check_choice, check_range, from_dict, to_dict
from tfmedseg.errors import ConfigError

__all__ = ["IntensitySpec", "ServingSpec", "CascadeConfig", "INPUT_MODES", "INTENSITY_KINDS", "CASCADE_COMBINATIONS"]

#: How a volume is cut into model inputs.
#: ``"2d"``/``"2.5d"``: per axial slice with ``context_slices`` neighbours as channels;
#: ``"3d_slab"``: ``context_slices`` slices in, the middle ``output_slices`` out;
#: ``"3d_patch"``: non-overlapping 3D windows of ``patch_size`` (the volume is zero-padded).
INPUT_MODES = ("2d", "2.5d", "3d_slab", "3d_patch")

#: ``"clip_scale"``: clip to [low, high] then map linearly to [out_low, out_high];
#: ``"zscore"``: subtract the mean and divide by the standard deviation of the whole input;
#: ``"none"``: pass through.
INTENSITY_KINDS = ("clip_scale", "zscore", "none")

#: How the tumour stage's input combines the CT with the liver mask: ``CT x liver`` or ``CT + liver``.
CASCADE_COMBINATIONS = ("mask", "add")


@dataclasses.dataclass
class IntensitySpec:
    """Intensity mapping of raw values (HU for CT) to network inputs."""

    kind: str = "clip_scale"
    low: float = -200.0
    high: float = 200.0
    out_low: float = 0.0
    out_high: float = 1.0

    def __post_init__(self) -> None:
        check_choice(self.kind, "intensity.kind", INTENSITY_KINDS)
        if self.kind == "clip_scale" and not self.high > self.low:
            raise ConfigError(f"high ({self.high}) must exceed low ({self.low})", path="intensity.high")


@dataclasses.dataclass
class ServingSpec:
    """Everything the raw-scan signature needs to go from a scan to a label map.

    Attributes:
        mode: One of :data:`INPUT_MODES`.
        input_size: In-plane ``(H, W)`` the network was trained at; slices are resized bilinearly to it
            and probabilities resized back (``None``: no resize).
        context_slices: Slices per input (9 for seed-002 2.5D, 8 for its 3D slabs, 1 for 2D).
        output_slices: Slices per output (1 for 2D/2.5D, 4 for seed-002 3D slabs).
        patch_size: ``(D, H, W)`` window for ``"3d_patch"``.
        intensity: Intensity mapping.
        labels: Class names by output channel (``["background", "liver", "tumour"]``).
        threshold: For a single-channel sigmoid output, the foreground threshold.
        largest_component_labels: Labels reduced to their largest 3D connected component in-graph.
        batch_size: Slices / windows per model call inside the graph.
        spacing_mm: Voxel spacing the model expects (informative; resampling happens on the client).
    """

    mode: str = "2.5d"
    input_size: tuple[int, int] | None = None
    context_slices: int = 1
    output_slices: int = 1
    patch_size: tuple[int, int, int] | None = None
    intensity: IntensitySpec = dataclasses.field(default_factory=IntensitySpec)
    labels: tuple[str, ...] = ("background", "foreground")
    threshold: float = 0.5
    largest_component_labels: tuple[int, ...] = ()
    batch_size: int = 8
    spacing_mm: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", INPUT_MODES)
        if self.context_slices < 1 or self.output_slices < 1 or self.output_slices > self.context_slices:
            raise ConfigError(
                f"need 1 <= output_slices ({self.output_slices}) <= context_slices ({self.context_slices})",
                path="context_slices",
            )
        if (self.context_slices - self.output_slices) % 2:
            raise ConfigError("context_slices - output_slices must be even (same context on both sides)", path="context_slices")
        if self.mode == "3d_patch" and (self.patch_size is None or len(self.patch_size) != 3):
            raise ConfigError("mode '3d_patch' needs a 3-element patch_size", path="patch_size")
        if self.input_size is not None:
            self.input_size = tuple(int(v) for v in self.input_size)
        if self.patch_size is not None:
            self.patch_size = tuple(int(v) for v in self.patch_size)
        self.labels = tuple(self.labels)
        self.largest_component_labels = tuple(int(v) for v in self.largest_component_labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``metadata.json``."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ServingSpec":
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`ConfigError`."""
        return from_dict(cls, data, source="serving spec")


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
    """The seed-002 liver-then-tumour cascade's combination and thresholds, shared by the host-side
    cascade (:func:`tfmedseg.inference.cascade.predict_cascade`), the in-graph one
    (:func:`tfmedseg.inference.graph.segment_cascade`) and the cascade SavedModel.

    Attributes:
        combination: Tumour input, ``"mask"`` (CT x liver) or ``"add"`` (CT + liver).
        liver_threshold: Liver probability threshold before the largest 3D component.
        tumour_threshold: Tumour probability threshold.
        tumour_component_threshold: Tumour components whose maximum probability is below it are
            dropped (seed 002 L848).
        min_tumour_voxels: Tumour components smaller than this are dropped (0: keep all; host side only).
    """

    combination: str = "mask"
    liver_threshold: float = 0.5
    tumour_threshold: float = 0.5
    tumour_component_threshold: float = 0.8
    min_tumour_voxels: int = 0

    def __post_init__(self) -> None:
        for name in ("liver_threshold", "tumour_threshold", "tumour_component_threshold"):
            check_range(getattr(self, name), name, 0.0, 1.0)
        check_choice(self.combination, "combination", CASCADE_COMBINATIONS)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``metadata.json``."""
        return to_dict(self)
