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

__all__ = ["global_batch_size", "distribute_dataset", "pipeline_options", "worker_shard", "check_shard", "shard_rows"]


def global_batch_size(per_replica_batch_size: int, strategy: tf.distribute.Strategy | None = None) -> int:
    """``per_replica_batch_size * strategy.num_replicas_in_sync`` (the default strategy: 1 replica)."""
    if int(per_replica_batch_size) < 1:
        raise InvalidInputError(f"must be >= 1, got {per_replica_batch_size}", path="per_replica_batch_size")
    strategy = strategy or tf.distribute.get_strategy()
    return int(per_replica_batch_size) * int(strategy.num_replicas_in_sync)


def pipeline_options(deterministic: bool = True, *, sharded: bool = False) -> tf.data.Options:
    """Options of every pipeline: deterministic order; DATA auto-sharding for multi-worker runs, or
    none when the pipeline is ``sharded`` by case already (:func:`worker_shard`)."""
    options = tf.data.Options()
    options.deterministic = deterministic
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.OFF if sharded else policy.DATA
    return options


def worker_shard(strategy: tf.distribute.Strategy | None = None) -> tuple[int, int] | None:
    """``(num_workers, this worker's index)`` of a multi-worker strategy, None for one worker.

    Read from the strategy's cluster resolver, or without a strategy from ``TF_CONFIG`` (what
    MultiWorkerMirroredStrategy reads; pipelines are built before the trainer makes its strategy):
    the chief (if any) is worker 0, then the ``worker`` tasks in order. A pipeline built with this
    ``shard`` (:func:`tfmedseg.data.pipelines.build_dataset`) reads only this worker's cases;
    ``DATA`` auto-sharding would read every case on every worker and drop most samples.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is None:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    tasks = resolver.cluster_spec().as_dict()
    chiefs, workers = len(tasks.get("chief", ())), len(tasks.get("worker", ()))
    total = chiefs + workers
    if total <= 1 or resolver.task_type not in ("chief", "worker"):
        return None
    index = 0 if resolver.task_type == "chief" else chiefs + int(resolver.task_id)
    return check_shard((total, index))


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """Validate ``(num_shards, index)`` (None passes)."""
    if shard is None:
        return None
    count, index = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise InvalidInputError(f"need (num_shards >= 1, 0 <= index < num_shards), got {tuple(shard)}", path="shard")
    return count, index


def shard_rows(table, shard: tuple[int, int]):
    """The rows of an epoch table (column 0 = case index) that belong to ``shard``: cases ``c`` with
    ``c % num_shards == index``. The shards of one table are disjoint and together cover it."""
    count, index = shard
    return table[table[:, 0] % count == index]


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
