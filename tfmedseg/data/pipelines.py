"""tf.data pipelines of segmentation samples: 2.5D stacks, 3D slabs, 2D slices, 3D patches.

Each builder takes preprocessed cases (:class:`~tfmedseg.data.source.CaseArrays`, tuples or dicts;
in memory or from :func:`~tfmedseg.data.source.cases_from_cache`) and returns a
``tf.data.Dataset`` of ``(x, y)`` batches:

==================  ================================  ===========================
builder             x                                 y (int32 labels)
==================  ================================  ===========================
stack25d_dataset    ``[B, H, W, 9 * C]`` float32      ``[B, H, W, 1]`` (middle)
slab3d_dataset      ``[B, 8, H, W, C]``               ``[B, 4, H, W, 1]`` (middle 4)
slice2d_dataset     ``[B, H, W, C]``                  ``[B, H, W, 1]``
patch3d_dataset     ``[B, d, h, w, C]``               ``[B, d, h, w, 1]``
==================  ================================  ===========================

How it runs: the epoch order (:mod:`tfmedseg.data.sampling`) is drawn in numpy from
``default_rng([seed, epoch])`` inside the graph (``tf.numpy_function``), the samples are cut out
with ``num_parallel_calls=AUTOTUNE`` and ``deterministic=True``, batched with
``drop_remainder=True`` (static shapes for tf.distribute and XLA) and prefetched. The same seed
gives the same batches; every epoch has a new order. ``batch_size`` is the *global* batch size
(see :func:`tfmedseg.data.distribute.global_batch_size`). ``epochs=None`` repeats forever.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from tfmedseg.data import extract, sampling
from tfmedseg.data.distribute import check_shard, pipeline_options, shard_rows
from tfmedseg.data.source import CaseArrays, as_case_arrays, slice_foreground
from tfmedseg.errors import InvalidInputError

__all__ = ["stack25d_dataset", "slab3d_dataset", "slice2d_dataset", "patch3d_dataset", "build_dataset"]


def build_dataset(
    order_fn: Callable[[np.random.Generator], np.ndarray],
    row_width: int,
    extract_fn: Callable[[np.ndarray], tuple[np.ndarray, ...]],
    output_specs: Sequence[tf.TensorSpec],
    batch_size: int,
    seed: int = 0,
    epochs: int | None = None,
    rows_per_epoch: int | None = None,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Generic pipeline: per-epoch index table -> parallel numpy extraction -> batch -> prefetch.

    Args:
        order_fn: ``rng -> int64 [N, row_width]`` table of one epoch.
        row_width: Columns of the table.
        extract_fn: ``row (int64 [row_width]) -> tuple of arrays`` matching ``output_specs``.
        output_specs: Shape and dtype of each extracted array (one sample).
        batch_size: Global batch size (``drop_remainder=True``).
        seed: Seed of the epoch orders.
        epochs: Number of epochs, None = infinite.
        rows_per_epoch: Rows per epoch when constant (sets the dataset's cardinality for finite
            ``epochs``).
        shard: ``(num_shards, index)``: keep only the rows of cases ``c`` (column 0) with
            ``c % num_shards == index``, *before* anything is read, so each worker of a
            multi-worker run reads its own cases (:func:`tfmedseg.data.distribute.worker_shard`);
            tf.data's auto-sharding is then turned off. None: every row.

    Returns:
        A ``tf.data.Dataset`` of tuples of batched tensors.
    """
    if int(batch_size) < 1:
        raise InvalidInputError(f"must be >= 1, got {batch_size}", path="batch_size")

    shard = check_shard(shard)

    def order_for_epoch(epoch: np.int64) -> np.ndarray:
        table = np.asarray(order_fn(sampling.epoch_rng(seed, int(epoch))), dtype=np.int64).reshape(-1, row_width)
        return table if shard is None else shard_rows(table, shard)

    def epoch_rows(epoch: tf.Tensor) -> tf.data.Dataset:
        table = tf.numpy_function(order_for_epoch, [epoch], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(table, [None, row_width]))

    dtypes = [spec.dtype for spec in output_specs]

    if shard is not None and not len(order_for_epoch(np.int64(0))):
        raise InvalidInputError(f"shard {shard} of the cases holds no sample (fewer cases than workers?)", path="shard")

    def extract_row(row: np.ndarray):
        return tuple(np.asarray(a, dtype=d.as_numpy_dtype) for a, d in zip(extract_fn(row), dtypes))

    def extract_tf(row: tf.Tensor):
        outs = tf.numpy_function(extract_row, [row], dtypes, stateful=False)
        return tuple(tf.ensure_shape(o, spec.shape) for o, spec in zip(outs, output_specs))

    epochs_ds = tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(int(epochs))
    ds = epochs_ds.flat_map(epoch_rows)
    ds = ds.map(extract_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(int(batch_size), drop_remainder=True)
    if epochs is not None and rows_per_epoch is not None and shard is None:
        ds = ds.apply(tf.data.experimental.assert_cardinality((int(epochs) * int(rows_per_epoch)) // int(batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options(sharded=shard is not None))


def _labeled_cases(cases) -> list[CaseArrays]:
    cases = as_case_arrays(cases)
    for case in cases:
        if case.label is None:
            raise InvalidInputError("a segmentation sampler needs a label map; this case has none", path=case.case_id)
    return cases


def _common_inplane(cases: list[CaseArrays]) -> tuple[int, int, int]:
    ref = cases[0].image.shape[1:]
    for case in cases[1:]:
        if case.image.shape[1:] != ref:
            raise InvalidInputError(
                f"image [H, W, C] {case.image.shape[1:]} differs from the first case's {ref}; resample the cases first",
                path=case.case_id,
            )
    return tuple(int(v) for v in ref)


def _unit_foreground(case: CaseArrays, starts: np.ndarray, span: int) -> np.ndarray:
    """Whether the ``span`` label slices from each of ``starts`` hold foreground: bool ``[len(starts)]``
    (a streamed label map is read a few slices at a time)."""
    per_slice = slice_foreground(case.label)
    if span == 1:
        return per_slice[starts]
    return np.array([per_slice[z0 : z0 + span].any() for z0 in starts], bool)


def _slice_units_dataset(cases, units, span: int, extract_one, specs, batch_size, *, order: str = "volume",
                         seed: int = 0, epochs: int | None = None, foreground_fraction: float = 0.5,
                         shard: tuple[int, int] | None = None) -> tf.data.Dataset:
    """Batches of ``extract_one(case, z)`` over each case's slice ``units`` (start slices).

    The sampling keywords of the slice datasets: ``order`` is one of
    :data:`~tfmedseg.data.sampling.ORDERS` (default ``"volume"``, seed 002's epoch order; the
    ``foreground`` order looks at the ``span`` label slices of each unit and draws
    ``foreground_fraction`` of them with foreground), ``seed`` fixes the order and ``epochs`` (None:
    repeat forever) the length; ``shard`` (``(workers, index)``, :func:`build_dataset`) keeps this
    worker's cases only."""
    foreground = None
    if order == "foreground":
        foreground = [_unit_foreground(case, u, span) for case, u in zip(cases, units)]

    def order_fn(rng):
        return sampling.epoch_order(units, order, rng, foreground, foreground_fraction)

    order_fn(sampling.epoch_rng(seed, 0))  # validate order / fraction / foreground now, not in the graph

    def fn(row):
        return extract_one(cases[row[0]], int(row[1]))

    return build_dataset(order_fn, 2, fn, specs, batch_size, seed, epochs, sum(len(u) for u in units), shard)


def stack25d_dataset(cases, batch_size: int, *, n_slices: int = 9, pad_value: float = 0.0, **sampling_options: Any) -> tf.data.Dataset:
    """Seed 002 2.5D stacks: ``n_slices`` (9) slices as channels -> the middle slice's label.

    Slices beyond the volume ends are ``pad_value`` (0). ``**sampling_options``: ``order`` (one of
    :data:`~tfmedseg.data.sampling.ORDERS`, default ``"volume"``, the seed's epoch order), ``seed``
    (0), ``epochs`` (None: endless), ``foreground_fraction`` (0.5, for the ``foreground`` order),
    ``shard`` (this worker's share of the cases, :func:`build_dataset`). Cases streamed from the cache
    (:class:`~tfmedseg.data.source.CaseArrays` over ``CachedArray`` s) are read 9 slices per sample.

    Returns:
        Dataset of ``(x [B, H, W, n_slices * C] float32, y [B, H, W, 1] int32)``.
    """
    cases = _labeled_cases(cases)
    h, w, c = _common_inplane(cases)
    units = [np.arange(case.depth) for case in cases]
    specs = [tf.TensorSpec([h, w, n_slices * c], tf.float32), tf.TensorSpec([h, w, 1], tf.int32)]
    return _slice_units_dataset(
        cases, units, 1, lambda case, z: extract.stack_25d(case.image, case.label, z, n_slices, pad_value), specs,
        batch_size, **sampling_options)


def slab3d_dataset(cases, batch_size: int, *, n_in: int = 8, n_out: int = 4, pad_value: float = 0.0,
                   **sampling_options: Any) -> tf.data.Dataset:
    """Seed 002 3D slabs: ``n_in`` (8) slices in, the middle ``n_out`` (4) slices' labels out.

    The target slabs of a volume tile it with stride ``n_out``; the last one is moved back to end
    at the last slice (:func:`~tfmedseg.data.sampling.slab_starts`), so targets are always real
    slices; the 2 context slices on each side are zero (``pad_value``) beyond the volume ends.
    ``**sampling_options``: ``order``, ``seed``, ``epochs``, ``foreground_fraction``, ``shard`` as
    :func:`stack25d_dataset`.

    Returns:
        Dataset of ``(x [B, n_in, H, W, C] float32, y [B, n_out, H, W, 1] int32)``.
    """
    cases = _labeled_cases(cases)
    h, w, c = _common_inplane(cases)
    units = []
    for case in cases:
        try:
            units.append(sampling.slab_starts(case.depth, n_out))
        except InvalidInputError as exc:
            raise InvalidInputError(exc.reason, path=case.case_id) from None
    specs = [tf.TensorSpec([n_in, h, w, c], tf.float32), tf.TensorSpec([n_out, h, w, 1], tf.int32)]
    return _slice_units_dataset(
        cases, units, n_out, lambda case, z: extract.slab_3d(case.image, case.label, z, n_in, n_out, pad_value), specs,
        batch_size, **sampling_options)


def slice2d_dataset(cases, batch_size: int, *, order: str = "uniform", **kwargs: Any) -> tf.data.Dataset:
    """Seeds 000 / 003: full 2D slices, each slice on its own (a 2.5D stack of one slice).

    Args:
        cases, batch_size, order: As :func:`stack25d_dataset` (default order ``uniform``).
        **kwargs: ``seed``, ``epochs``, ``foreground_fraction``, ``pad_value`` of :func:`stack25d_dataset`.

    Returns:
        Dataset of ``(x [B, H, W, C] float32, y [B, H, W, 1] int32)``.
    """
    return stack25d_dataset(cases, batch_size, n_slices=1, order=order, **kwargs)


def patch3d_dataset(
    cases,
    batch_size: int,
    patch_size: Sequence[int],
    *,
    foreground_fraction: float = 0.33,
    samples_per_epoch: int | None = None,
    empty_cases: str = "error",
    seed: int = 0,
    epochs: int | None = None,
    pad_value: float = 0.0,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """3D patches with foreground oversampling (seed 004 style; nnU-Net uses 1/3).

    Args:
        cases: Labeled cases; shapes may differ.
        batch_size: Global batch size.
        patch_size: ``(d, h, w)``.
        foreground_fraction: Fraction of patches centred on a random foreground voxel; the
            others are centred on a uniform voxel (patches are padded beyond the volume).
        samples_per_epoch: Patches per epoch (default: one per case).
        empty_cases: ``"error"`` (default) or ``"random"``, see
            :func:`~tfmedseg.data.sampling.patch_centers`.

    Returns:
        Dataset of ``(x [B, d, h, w, C] float32, y [B, d, h, w, 1] int32)``.

    Raises:
        InvalidInputError: Naming a case whose mask is empty when foreground patches are wanted.
    """
    cases = _labeled_cases(cases)
    channels = {case.image.shape[-1] for case in cases}
    if len(channels) != 1:
        raise InvalidInputError(f"cases have different channel counts {sorted(channels)}", path="cases")
    size = tuple(int(s) for s in patch_size)
    if len(size) != 3 or min(size) < 1:
        raise InvalidInputError(f"must be 3 positive sizes, got {tuple(patch_size)}", path="patch_size")
    shapes = [case.image.shape[:3] for case in cases]
    coords = [sampling.foreground_coords(case.label, seed=seed) for case in cases]
    ids = [case.case_id for case in cases]
    n = int(samples_per_epoch or len(cases))

    def order_fn(rng):
        return sampling.patch_centers(shapes, coords, n, foreground_fraction, rng, ids, empty_cases)

    order_fn(sampling.epoch_rng(seed, 0))  # raises now for empty masks

    def fn(row):
        case = cases[row[0]]
        return extract.patch_3d(case.image, case.label, row[1:4], size, pad_value)

    specs = [tf.TensorSpec(size + (channels.pop(),), tf.float32), tf.TensorSpec(size + (1,), tf.int32)]
    return build_dataset(order_fn, 5, fn, specs, batch_size, seed, epochs, n, shard)
