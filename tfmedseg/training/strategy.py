"""Distribution strategy and precision selection for training.

Strategy names (``TrainConfig.strategy``):

- ``"auto"``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one task,
  else ``MirroredStrategy`` over all GPUs when there are two or more, else the default strategy.
- ``"default"``: the default (single-device) strategy.
- ``"mirrored"``: ``MirroredStrategy`` over all local GPUs (the CPU when there is none).
- ``"multiworker"``: ``MultiWorkerMirroredStrategy`` configured from ``TF_CONFIG`` (required).
  It must be created before TensorFlow runs any op in the process (the trainer creates it
  first). Every worker runs the same script; worker 0 (or the ``chief``) is the chief.
- ``"cpu:N"``: ``MirroredStrategy`` over ``N`` logical CPU devices, for testing distribution on
  one machine. The logical devices must be configured before TensorFlow initialises its devices.

Going past one machine: start the same training script on every host with
``TF_CONFIG='{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker",
"index": i}}'`` and ``strategy: multiworker``; the global batch is the dataset's batch, sharded by
data across the workers.

Example:
    >>> strategy = make_strategy("default")
    >>> strategy.num_replicas_in_sync
    1
"""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf

from tfmedseg.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["STRATEGY_NAMES", "PRECISION_NAMES", "make_strategy", "configure_logical_cpus", "is_chief", "task_index", "resolve_precision", "patch_multiworker_build",
           "cpu_has_bf16", "gpu_has_bf16"]

_CPU_STRATEGIES: dict[tuple[str, ...], tf.distribute.Strategy] = {}
STRATEGY_NAMES = ("auto", "default", "mirrored", "multiworker", "cpu:N")
PRECISION_NAMES = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}", path="TF_CONFIG") from exc


def _num_tasks(tf_config: dict) -> int:
    return sum(len(v) for k, v in tf_config.get("cluster", {}).items() if k in ("chief", "worker"))


def task_index() -> tuple[str, int]:
    """``(task_type, task_index)`` from ``TF_CONFIG``; ``("worker", 0)`` without it."""
    task = _tf_config().get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def is_chief() -> bool:
    """True for the process that writes checkpoints and logs (the chief, or worker 0)."""
    tf_config = _tf_config()
    kind, index = task_index()
    if "chief" in tf_config.get("cluster", {}):
        return kind == "chief"
    return kind == "worker" and index == 0


def configure_logical_cpus(n: int) -> list[str]:
    """Split the first CPU into ``n`` logical devices (no-op when already split that way).

    Returns:
        The names of the ``n`` logical CPU devices.

    Raises:
        ConfigError: TensorFlow already initialised its devices with fewer logical CPUs.
    """
    if n < 1:
        raise ConfigError(f"needs N >= 1, got {n}", path="strategy")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        if n > 1:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        pass  # already initialised: accept if there are enough devices
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(names) < n:
        raise ConfigError(
            f"needs {n} logical CPU devices but TensorFlow was initialised with {len(names)}; "
            "create the strategy before running any TensorFlow op",
            path="strategy",
        )
    return names[:n]


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Build the ``tf.distribute`` strategy named ``name`` (see the module docstring).

    Raises:
        ConfigError: Unknown name, ``multiworker`` without ``TF_CONFIG``, bad ``cpu:N``.
    """
    if name.startswith("cpu:"):
        try:
            n = int(name[4:])
        except ValueError:
            raise ConfigError(f"expected cpu:N with an integer N, got {name!r}", path="strategy") from None
        devices = tuple(configure_logical_cpus(n))
        if devices not in _CPU_STRATEGIES:
            # ReductionToOneDevice, not collectives: two MirroredStrategy objects over the same
            # devices in one process reuse the same collective instance keys and abort with
            # "Shape mismatch in the collective instance"; test strategies are cached too.
            _CPU_STRATEGIES[devices] = tf.distribute.MirroredStrategy(list(devices), cross_device_ops=tf.distribute.ReductionToOneDevice())
        return _CPU_STRATEGIES[devices]
    if name not in STRATEGY_NAMES:
        raise ConfigError(f"unknown strategy {name!r}; allowed: {STRATEGY_NAMES}", path="strategy")
    tf_config = _tf_config()
    if name == "multiworker" or (name == "auto" and _num_tasks(tf_config) > 1):
        if not tf_config:
            raise ConfigError("strategy 'multiworker' needs the TF_CONFIG environment variable", path="strategy")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "auto" and len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def cpu_has_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively: ``avx512_bf16`` or an AMX flag in ``cpuinfo``.

    Reads the ``flags`` lines of ``/proc/cpuinfo`` (Linux); ``False`` where the file cannot be
    read (other systems), so ``precision: auto`` falls back to float32 there.
    """
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return "avx512_bf16" in flags or any(f.startswith("amx") for f in flags)


def gpu_has_bf16() -> bool | None:
    """``True``/``False``: whether the first GPU has bfloat16 tensor cores (compute capability >= 8.0);
    ``None`` when there is no GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability")
    return capability is not None and tuple(capability) >= (8, 0)


def resolve_precision(name: str) -> str:
    """The Keras dtype policy for ``name``; ``"auto"`` picks it from the hardware and logs why.

    ``"auto"``: on a GPU, ``mixed_bfloat16`` where it has bfloat16 tensor cores (compute
    capability >= 8.0), else ``mixed_float16``; on a CPU, ``mixed_bfloat16`` where it computes
    bfloat16 natively (``avx512_bf16`` or AMX, :func:`cpu_has_bf16`: the 3D U-Net step took 0.52x
    the float32 time on such a CPU), else ``float32`` (bfloat16 is emulated there: on the AVX2
    reference CPU a training step took 9x (2D U-Net) and 22x (3D U-Net) its float32 time, see
    ``docs/performance.md``).

    Raises:
        ConfigError: Unknown name.
    """
    if name not in PRECISION_NAMES:
        raise ConfigError(f"unknown precision {name!r}; allowed: {PRECISION_NAMES}", path="mixed_precision")
    if name != "auto":
        return name
    gpu = gpu_has_bf16()
    if gpu is not None:
        policy = "mixed_bfloat16" if gpu else "mixed_float16"
        reason = "GPU with bfloat16 tensor cores" if gpu else "GPU without bfloat16 tensor cores"
    elif cpu_has_bf16():
        policy, reason = "mixed_bfloat16", "CPU with avx512_bf16/AMX"
    else:
        policy, reason = "float32", "CPU without avx512_bf16/AMX"
    logger.info("precision auto: %s (%s)", policy, reason)
    return policy


def patch_multiworker_build(model: keras.Model) -> None:
    """Work around Keras 3.15 ``fit`` under ``MultiWorkerMirroredStrategy``.

    ``Trainer._maybe_symbolic_build`` calls ``strategy.reduce("MEAN", (x, y), axis=None)`` on the
    first distributed batch, which ``CollectiveAllReduceStrategy`` cannot do for a nested
    structure ("Attempt to convert a value (PerReplica...) to a Tensor"). The symbolic build only
    needs the shapes, so this instance-level override takes the local replica's batch instead.
    Harmless for other strategies (it is only installed for multi-worker ones).
    """
    original = model._maybe_symbolic_build

    def _maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is None or model._distribute_strategy is None:
            return original(iterator=iterator, data_batch=data_batch)
        strategy = model.distribute_strategy
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v, batch
            )
            break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = _maybe_symbolic_build
    _patch_reduce_per_replica()


def _patch_reduce_per_replica() -> None:
    """Keras 3.15 reduces per-replica *scalars* (loss, metrics) with ``axis=0`` under
    multi-worker collectives, which fails ("Invalid reduction dimension 0 for input with 0
    dimensions"); reduce rank-0 values with ``axis=None``. Installed once per process."""
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    original = keras_tf_trainer.reduce_per_replica
    if getattr(original, "_tfmedseg_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("mean", "auto") and keras_tf_trainer._collective_all_reduce_multi_worker(strategy):

            def _reduce(v):
                if not (keras_tf_trainer._is_per_replica_instance(v) or tf.is_tensor(v)):
                    return v
                local = strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
                return strategy.reduce("MEAN", v, axis=0 if local.shape.rank else None)

            return tf.nest.map_structure(_reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica._tfmedseg_patched = True
    keras_tf_trainer.reduce_per_replica = reduce_per_replica


def _set_policy(name: str) -> str:
    previous = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(name)
    return previous
