"""What a segmentation network sees of a volume: :class:`SliceGeometry` and :class:`PatchGeometry`.

One object answers every question an experiment, a sampler and an exporter ask about a network's
input: its rank, how many slices go in and come out, the network input shape, how many samples
an epoch has, the tf.data pipeline that cuts them out, and the serving-spec fields that cut a raw
volume the same way at inference time.

==========================================  ====  ========  =======  ===============================
geometry                                    rank  context   output   network input
==========================================  ====  ========  =======  ===============================
``SliceGeometry(2, 1, 1)`` (2D slices)      2     1         1        ``[H, W, C]``
``SliceGeometry(2, 9, 1)`` (seed-002 2.5D)  2     9         1        ``[H, W, 9 * C]``
``SliceGeometry(3, 8, 4)`` (seed-002 3D)    3     8         4        ``[8, H, W, C]``
``PatchGeometry((d, h, w))`` (3D patches)   3     d         d        ``[d, h, w, C]``
==========================================  ====  ========  =======  ===============================

Example:
    >>> g = SliceGeometry(rank=3, context_slices=8, output_slices=4)
    >>> g.input_shape(128), g.mode
    ((8, 128, 128, 1), '3d_slab')
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from tfmedseg.config import check_choice
from tfmedseg.errors import ConfigError

__all__ = ["SliceGeometry", "PatchGeometry", "SLICE_RANKS"]

SLICE_RANKS = (2, 3)


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Axial slices in, axial slices out: 2D slices, 2.5D stacks or 3D slabs.

    Attributes:
        rank: Spatial rank of the network: 2 (slices, the context stacked as channels) or 3
            (slabs ``[context, H, W, C]``).
        context_slices: Slices per input (1 for 2D, 9 for seed-002 2.5D stacks, 8 for its slabs).
        output_slices: Middle slices per output (1 for rank 2, 4 for seed-002 slabs).
        channels: Image channels per slice (1 for CT, 2 for PET/CT).
    """

    rank: int = 2
    context_slices: int = 9
    output_slices: int = 1
    channels: int = 1

    def __post_init__(self) -> None:
        check_choice(self.rank, "geometry.rank", SLICE_RANKS)
        if self.rank == 2 and self.output_slices != 1:
            raise ConfigError(f"a rank-2 network predicts one slice, got output_slices={self.output_slices}",
                              path="geometry.output_slices")
        if not 1 <= self.output_slices <= self.context_slices:
            raise ConfigError(f"need 1 <= output_slices ({self.output_slices}) <= context_slices "
                              f"({self.context_slices})", path="geometry.context_slices")
        if (self.context_slices - self.output_slices) % 2:
            raise ConfigError("context_slices - output_slices must be even (same context on both sides)",
                              path="geometry.context_slices")
        if self.channels < 1:
            raise ConfigError(f"must be >= 1, got {self.channels}", path="geometry.channels")

    @property
    def mode(self) -> str:
        """Serving-spec input mode: ``"2d"``, ``"2.5d"`` or ``"3d_slab"``."""
        if self.rank == 3:
            return "3d_slab"
        return "2d" if self.context_slices == 1 else "2.5d"

    def input_shape(self, inplane_size: int | Sequence[int]) -> tuple[int, ...]:
        """Network input shape without the batch axis for an in-plane size (int or ``(H, W)``)."""
        h, w = (inplane_size, inplane_size) if isinstance(inplane_size, int) else tuple(inplane_size)
        if self.rank == 3:
            return (self.context_slices, h, w, self.channels)
        return (h, w, self.context_slices * self.channels)

    def units(self, cases: Sequence) -> int:
        """Samples in one pass over ``cases`` (objects with ``depth``): every slice, or every slab."""
        from tfmedseg.data.sampling import slab_starts

        if self.rank == 3:
            return sum(len(slab_starts(c.depth, self.output_slices)) for c in cases)
        return sum(c.depth for c in cases)

    def dataset(self, cases: Sequence, batch_size: int, *, order: str = "volume", seed: int = 0,
                epochs: int | None = None, foreground_fraction: float = 0.5, shard: tuple[int, int] | None = None):
        """The ``(x, y)`` tf.data pipeline of this geometry (:mod:`tfmedseg.data.pipelines`); ``shard``:
        this worker's ``(num_workers, index)`` share of the cases."""
        from tfmedseg.data.pipelines import slab3d_dataset, stack25d_dataset

        kwargs = dict(order=order, seed=seed, epochs=epochs, foreground_fraction=foreground_fraction, shard=shard)
        if self.rank == 3:
            return slab3d_dataset(cases, batch_size, n_in=self.context_slices, n_out=self.output_slices, **kwargs)
        return stack25d_dataset(cases, batch_size, n_slices=self.context_slices, **kwargs)

    def serving_fields(self) -> dict:
        """Keyword arguments of ``ServingSpec`` describing this geometry."""
        return {"mode": self.mode, "context_slices": self.context_slices, "output_slices": self.output_slices}


@dataclasses.dataclass(frozen=True)
class PatchGeometry:
    """3D patches (cubes) in and out, sampled with foreground oversampling (seed 004, nnU-Net).

    Attributes:
        patch_size: ``(d, h, w)`` voxels.
        channels: Image channels (2 for PET/CT).
        samples_per_epoch: Patches per epoch (0: one per case).
    """

    patch_size: tuple[int, int, int] = (128, 128, 128)
    channels: int = 1
    samples_per_epoch: int = 0

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.patch_size)
        if len(size) != 3 or min(size) < 1:
            raise ConfigError(f"must be 3 positive sizes, got {self.patch_size}", path="geometry.patch_size")
        object.__setattr__(self, "patch_size", size)
        if self.channels < 1:
            raise ConfigError(f"must be >= 1, got {self.channels}", path="geometry.channels")

    rank = 3
    mode = "3d_patch"

    @property
    def output_slices(self) -> int:
        return self.patch_size[0]

    def input_shape(self, inplane_size=None) -> tuple[int, ...]:
        """``(d, h, w, C)``; ``inplane_size`` is ignored (the patch fixes it)."""
        return (*self.patch_size, self.channels)

    def units(self, cases: Sequence) -> int:
        """Patches per epoch."""
        return self.samples_per_epoch or len(cases)

    def dataset(self, cases: Sequence, batch_size: int, *, order: str = "foreground", seed: int = 0,
                epochs: int | None = None, foreground_fraction: float = 0.33, shard: tuple[int, int] | None = None):
        """The ``(x, y)`` patch pipeline (:func:`tfmedseg.data.pipelines.patch3d_dataset`): a share
        ``foreground_fraction`` of the patches is centred on a foreground voxel; ``order`` is accepted
        for a uniform call and ignored (patch centres are always drawn at random)."""
        from tfmedseg.data.pipelines import patch3d_dataset

        return patch3d_dataset(cases, batch_size, self.patch_size, foreground_fraction=foreground_fraction,
                               samples_per_epoch=self.units(cases), seed=seed, epochs=epochs, shard=shard)

    def serving_fields(self) -> dict:
        """Keyword arguments of ``ServingSpec`` describing this geometry."""
        d = self.patch_size[0]
        return {"mode": self.mode, "patch_size": self.patch_size, "context_slices": d, "output_slices": d}
