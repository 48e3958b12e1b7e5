"""tf.distribute helpers: global batch size and distributing a pipeline's dataset.

Every pipeline in :mod:`tfmedseg.data` batches with the *global* batch size
(``per_replica_batch_size * num_replicas``) and ``drop_remainder=True`` (static shapes), so that
``strategy.experimental_distribute_dataset`` hands each replica ``per_replica_batch_size`` samples.

Example:
    >>> strategy = tf.distribute.MirroredStrategy()
    >>> ds = stack25d_dataset(cases, batch_size=global_batch_size(8, strategy), seed=0)
    >>> dist = distribute_dataset(ds, strategy)
"""

from __future__ import annotations

import tensorflow as tf

from tfmedseg.errors import InvalidInputError

__all__ = ["global_batch_size", "distribute_dataset", "pipeline_options"]


def global_batch_size(per_replica_batch_size: int, strategy: tf.distribute.Strategy | None = None) -> int:
    """``per_replica_batch_size * strategy.num_replicas_in_sync`` (the default strategy: 1 replica)."""
    if int(per_replica_batch_size) < 1:
        raise InvalidInputError(f"must be >= 1, got {per_replica_batch_size}", path="per_replica_batch_size")
    strategy = strategy or tf.distribute.get_strategy()
    return int(per_replica_batch_size) * int(strategy.num_replicas_in_sync)


def pipeline_options(deterministic: bool = True) -> tf.data.Options:
    """Options of every pipeline: deterministic order, DATA auto-sharding for multi-worker runs."""
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def distribute_dataset(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy):
    """``strategy.experimental_distribute_dataset(dataset)`` after checking the global batch divides.

    Raises:
        InvalidInputError: If the dataset's static batch size is not a multiple of the number of
            replicas (each replica would get a different batch size).
    """
    first = tf.nest.flatten(dataset.element_spec)[0]
    batch = first.shape[0] if first.shape.rank else None
    replicas = strategy.num_replicas_in_sync
    if batch is not None and batch % replicas:
        raise InvalidInputError(
            f"global batch size {batch} is not a multiple of the {replicas} replicas; use global_batch_size()",
            path="batch_size",
        )
    return strategy.experimental_distribute_dataset(dataset)
