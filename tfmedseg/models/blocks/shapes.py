"""Shape helpers shared by the blocks: the spatial rank of a tensor and per-axis arguments."""

from __future__ import annotations

from typing import Sequence

__all__ = ["spatial_rank", "as_tuple"]


def spatial_rank(x) -> int:
    """Number of spatial axes of a channels-last tensor (``len(x.shape) - 2``)."""
    rank = len(x.shape) - 2
    if rank not in (2, 3):
        raise ValueError(f"expected a [B, H, W, C] or [B, D, H, W, C] tensor, got shape {tuple(x.shape)}")
    return rank


def as_tuple(value: int | Sequence[int], rank: int, argument: str) -> tuple[int, ...]:
    """An int or a length-``rank`` sequence as a ``rank``-tuple of ints.

    Raises:
        ValueError: ``value`` is a sequence of the wrong length; the message names ``argument``.
    """
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(f"{argument} must be an int or a sequence of {rank} ints, got {value}")
    return value
