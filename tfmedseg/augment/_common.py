"""Shared plumbing of the augmentation layers: input structures, seeds, argument checks.

Every augmentation layer takes one of three input structures and returns the same structure:

* a dict ``{"image": [B, *S, C], "label": [B, *S] or [B, *S, K], ...}`` (``label`` and the
  detection keys ``"boxes"``, ``"masks"``, ``"classes"``, ``"num_valid"`` are optional; other keys
  pass through untouched),
* a tuple/list ``(image, label, *rest)`` or ``(image,)`` (``rest``, e.g. sample weights, passes
  through),
* a plain image tensor.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.errors import ConfigError

__all__: list[str] = []

IMAGE_KEY = "image"
LABEL_KEY = "label"


def _unpack(inputs: Any) -> tuple[dict, Callable[[dict], Any]]:
    """Turns any accepted input structure into a dict and returns the function that packs it back."""
    if isinstance(inputs, dict):
        if IMAGE_KEY not in inputs:
            raise ConfigError(
                f"augmentation input dict needs an {IMAGE_KEY!r} key, got keys {sorted(inputs)}", path="inputs"
            )
        return dict(inputs), lambda d: d
    if isinstance(inputs, (tuple, list)):
        if len(inputs) == 0:
            raise ConfigError("augmentation input tuple must hold (image, label, ...)", path="inputs")
        data = {IMAGE_KEY: inputs[0]}
        if len(inputs) > 1 and inputs[1] is not None:
            data[LABEL_KEY] = inputs[1]
        rest = tuple(inputs[2:])
        kind = type(inputs)
        has_label = len(inputs) > 1
        label_none = has_label and inputs[1] is None

        def pack(d: dict) -> Any:
            out = (d[IMAGE_KEY],)
            if has_label:
                out += (None if label_none else d[LABEL_KEY],)
            return kind(out + rest)

        return data, pack
    return {IMAGE_KEY: inputs}, lambda d: d[IMAGE_KEY]


def _check_range(name: str, value: Any, low: float | None = None, allow_scalar: bool = True) -> tuple[float, float]:
    """Checks a ``(lo, hi)`` range (or a scalar ``a`` meaning ``(-a, a)``) and returns it as floats."""
    if isinstance(value, (int, float)) and allow_scalar:
        if value < 0:
            raise ConfigError(f"a scalar range must be >= 0 (it means (-{name}, +{name})), got {value}", path=name)
        value = (-float(value), float(value))
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a (low, high) pair of numbers, got {value!r}", path=name) from None
    if lo > hi:
        raise ConfigError(f"low must be <= high, got ({lo}, {hi})", path=name)
    if low is not None and lo < low:
        raise ConfigError(f"values must be >= {low}, got ({lo}, {hi})", path=name)
    return lo, hi


def _check_probability(name: str, value: Any) -> float:
    """Checks a probability in [0, 1]."""
    try:
        p = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected a probability in [0, 1], got {value!r}", path=name) from None
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"expected a probability in [0, 1], got {p}", path=name)
    return p


class RandomAugmentLayer(keras.layers.Layer):
    """Base class: a seeded, batch-wise random layer that is the identity unless ``training=True``.

    Subclasses implement ``_augment(data: dict, seed) -> dict`` where ``seed`` is a stateless
    seed (``int64 [2]``) fresh for every call. Under ``tf.distribute`` the replica id is folded
    into the seed so that replicas draw different transforms.

    Args:
        seed: int or None. A fixed seed makes the sequence of draws deterministic.
        **kwargs: Passed to ``keras.layers.Layer`` (``name``, ...).
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and not isinstance(seed, int):
            raise ConfigError(f"seed must be an int or None, got {seed!r}", path="seed")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._allow_non_tensor_positional_args = True

    def _next_seed(self) -> tf.Tensor:
        """A fresh ``int64 [2]`` stateless seed; differs between replicas of a distribution strategy."""
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            replica = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
            seed = seed + tf.stack([tf.constant(0, tf.int64), replica * (1 << 32)])
        return seed

    def call(self, inputs, training=False):
        if not training:
            return inputs
        data, pack = _unpack(inputs)
        return pack(self._augment(data, self._next_seed()))

    def _augment(self, data: dict, seed: tf.Tensor) -> dict:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must implement _augment")

    def compute_output_spec(self, inputs, training=False):
        return keras.tree.map_structure(lambda x: keras.KerasTensor(x.shape, x.dtype), inputs)

    def get_config(self) -> dict:
        config = super().get_config()
        config["seed"] = self.seed
        return config


# Philox explicitly: "auto_select" compiles to a generator that runs ~50x slower under XLA on the
# CPU (a 16x256x256 normal draw took ~0.9 s instead of ~30 ms).
RNG_ALG = "philox"
# The noise words come from a counter hash (``_hash_words``), not from a tf.random generator: under XLA:CPU it
# is ~8x cheaper than Threefry-2x32 (0.15 vs 1.16 ms of one core for the 2^19 words of a 16 x 256^2 batch,
# docs/performance.md).
_MIX_MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)  # shifts 16, 15, 15: hash-prospector's lowest-bias 2-multiply hash


def _fold(seed: tf.Tensor, index: int) -> tf.Tensor:
    """The independent sub-seed ``index`` of a stateless seed."""
    return tf.random.experimental.stateless_fold_in(seed, index, alg=RNG_ALG)


def _uniform(seed: tf.Tensor, index: int, shape, low, high) -> tf.Tensor:
    """Stateless uniform draws in [low, high) from sub-stream ``index`` of ``seed``."""
    u = tf.random.stateless_uniform(shape, _fold(seed, index), minval=0.0, maxval=1.0, alg=RNG_ALG)
    return u * (high - low) + low


_NORMAL_TABLE: np.ndarray | None = None


def _normal_table() -> tf.Tensor:
    """The 65536 standard-normal quantiles ``Phi^-1((i + 0.5) / 65536)`` (float32, 256 KiB)."""
    global _NORMAL_TABLE
    if _NORMAL_TABLE is None:
        from scipy.special import ndtri

        _NORMAL_TABLE = ndtri((np.arange(65536) + 0.5) / 65536.0).astype(np.float32)
    return tf.constant(_NORMAL_TABLE)


def _normal_from_bits(bits: tf.Tensor, shape) -> tf.Tensor:
    """Standard normals of ``shape`` from ``ceil(prod(shape) / 2)`` random int32 words.

    The low and the high 16-bit half of word ``i`` index a table of the 65536 equiprobable normal
    quantiles (inverse-CDF sampling, two normals per 32 random bits, no transcendental functions)
    and give normals ``2 i`` and ``2 i + 1``. The 16-bit resolution bounds ``|z|`` by 4.33 (the
    1.5e-5 of the mass beyond is cut).
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    low = tf.bitwise.bitwise_and(bits, 0xFFFF)
    high = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 16), 0xFFFF)
    z = tf.gather(_normal_table(), tf.reshape(tf.stack([low, high], axis=-1), [-1]))[: tf.reduce_prod(shape)]
    return tf.reshape(z, shape)


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """A bijection of uint32 with full avalanche: ``x ^= x >> 16; x *= m1; x ^= x >> 15; x *= m2; x ^= x >> 15``
    (the xor-shift-multiply integer hash of C. Wellons' hash-prospector, constants of its lowest-bias
    two-multiply variant, bias 0.108). Integer multiplies, shifts and xors only: XLA vectorises it."""
    u32 = tf.uint32
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, u32)))
    x = x * tf.constant(_MIX_MULTIPLIERS[0], u32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, u32)))
    x = x * tf.constant(_MIX_MULTIPLIERS[1], u32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, u32)))


def _hash_words(seed: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """``count`` random int32 words, a pure function of the stateless ``seed`` (``[2]`` int32 or int64, e.g.
    from ``_fold``): word ``i`` is ``mix(mix(i ^ k0) + k1)`` of the counter ``i`` (``_mix32``; ``k0``, ``k1`` the seed's two
    32-bit words, or for an ``int64`` seed its four 32-bit halves xor-ed in pairs). A keyed counter-based generator in the manner of Random123's Philox /
    Threefry with two hash rounds instead of 10 / 20 cipher rounds: for a fixed key it is a permutation of the
    counters (no repeated word within a stream), and it passes the statistical checks of
    ``tests/augment/test_intensity.py`` (uniform bits, 16-bit histogram, no correlation between neighbours, seeds
    or batches). Noise for augmentation, not for cryptography or Monte-Carlo estimates. ``count < 2^31``.
    """
    seed = tf.convert_to_tensor(seed)
    halves = tf.reshape(tf.bitcast(seed, tf.uint32), [-1])  # 2 (int32 seed, as _fold's) or 4 (int64) words
    k0, k1 = halves[0], halves[1]
    if seed.dtype.size == 8:
        k0, k1 = tf.bitwise.bitwise_xor(k0, halves[3]), tf.bitwise.bitwise_xor(k1, halves[2])
    counter = tf.bitcast(tf.range(count, dtype=tf.int32), tf.uint32)
    words = _mix32(_mix32(tf.bitwise.bitwise_xor(counter, k0)) + k1)
    return tf.bitcast(words, tf.int32)


@tf.function(jit_compile=True, reduce_retracing=True)
def _hash_words_xla(seed: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    return _hash_words(seed, count)


def _noise_words(seed: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """The ``ceil(prod(shape) / 2)`` words of the normals of ``shape``, in an XLA computation of their own: in the
    same computation as the table lookup XLA fuses the hash into the lookup's scalar gather loop (3.1 ms of one core
    for a 16 x 256^2 batch instead of 0.15 + 0.72 ms, docs/performance.md)."""
    return _hash_words_xla(seed, (tf.reduce_prod(shape) + 1) // 2)


@tf.function(jit_compile=True, reduce_retracing=True)
def _normal_xla(words: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    return _normal_from_bits(words, shape)


def _normal(seed: tf.Tensor, index: int, shape) -> tf.Tensor:
    """Stateless standard normal draws from sub-stream ``index`` of ``seed``: ``_normal_from_bits`` of the
    ``_hash_words`` of ``_fold(seed, index)``.

    Words and table lookups compiled with XLA: ~1 ms of one core for 16x256x256 on this CPU, against
    11 ms for Box-Muller in graph ops and ~25 ms for ``tf.random.stateless_normal`` (XLA:CPU's log / sin /
    cos / ndtri are scalar calls: Box-Muller or ``ndtri`` inside XLA cost 25-40 ms).
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    return _normal_xla(_noise_words(_fold(seed, index), shape), shape)


@tf.function(jit_compile=True, reduce_retracing=True)
def _scaled_normal_xla(words: tf.Tensor, shape: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    return _normal_from_bits(words, shape) * std


@tf.function(jit_compile=True, reduce_retracing=True)
def _add_xla(x: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    return x + tf.cast(z, x.dtype)


def _add_normal(x: tf.Tensor, seed: tf.Tensor, index: int, std: tf.Tensor) -> tf.Tensor:
    """``x + std * z`` with ``z = _normal(seed, index, shape of x)``.

    ``std`` (float32, ``[B, 1, .., 1]``) broadcasts against ``x``. The scaled normals are one XLA
    computation that takes only the shape, not ``x`` (no data dependency): TensorFlow draws them on
    one core while the layers before produce ``x`` on the other; the add is a second, vectorised XLA
    computation (half the time of the graph op). One stream for the whole batch (it used to be one
    per batch half plus a concatenation).
    """
    return _add_xla(x, _scaled_normals(seed, index, tf.shape(x), std))


def _scaled_normals(seed: tf.Tensor, index: int, shape: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """``std * _normal(seed, index, shape)`` (float32; two shape-only XLA computations: words, lookup x std)."""
    seed = _fold(seed, index)
    return _scaled_normal_xla(_noise_words(seed, shape), shape, std)


def _bernoulli(seed: tf.Tensor, index: int, shape, p: float) -> tf.Tensor:
    """Stateless float 0/1 draws with P(1) = p from sub-stream ``index`` of ``seed``."""
    if p <= 0.0:
        return tf.zeros(shape, tf.float32)
    if p >= 1.0:
        return tf.ones(shape, tf.float32)
    return tf.cast(_uniform(seed, index, shape, 0.0, 1.0) < p, tf.float32)


def _per_sample_shape(x: tf.Tensor) -> tf.Tensor:
    """``[B, 1, ..., 1]`` (rank of ``x``) for per-sample broadcasting."""
    rank = x.shape.rank
    return tf.concat([tf.shape(x)[:1], tf.ones([rank - 1], tf.int32)], axis=0)
