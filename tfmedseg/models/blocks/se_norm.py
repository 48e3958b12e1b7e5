"""Squeeze-excitation normalisation and the residual SE-norm unit (seed 004, Iantsen et al. 2020).

Seed 004 (the RRSE U-Net report) names "SE normalisation" and "residual layers" without defining
them; the definitions are those of the HECKTOR 2020 winner it is built on (Iantsen, Visvikis,
Hatt, "Squeeze-and-Excitation Normalization for Automated Delineation of Head and Neck Primary
Tumors in Combined PET and CT Images", LNCS 12603, 2021), whose public code (``iantsen/hecktor``,
``src/layers.py``) is the executable reference followed here:

* :class:`SENormalization` (``FastSmoothSENorm``): ``y = gamma(x) * norm(x) + beta(x)`` where
  ``norm`` is instance normalisation without affine parameters and ``gamma``/``beta`` are
  per-sample, per-channel values predicted from the *pre-normalisation* input by two separate
  squeeze-excitation branches ``GAP -> Dense(C // r) -> ReLU -> Dense(C)``, squashed by a sigmoid
  (gamma, in (0, 1)) and a tanh (beta, in (-1, 1)); ``r = 2``. ``base="batch"`` swaps the
  instance statistics for batch statistics (batch normalisation without affine), the seed's
  Table 1-3 "BatchNorm3d" setting; the SE branches stay.
* :func:`apply_norm_conv`: the reference's two conv units. With an SE norm
  (``FastSmoothSeNormConv3d``): convolution with bias -> ReLU -> SE norm (the ReLU comes *before*
  the normalisation, as in the reference). With a plain affine norm (``BasicConv3d`` of the
  reference's ``BaselineUNet``): convolution without bias -> norm -> ReLU.
* :func:`apply_residual_se_unit` (``RESseNormConv3d``): ``y = unit_k(x) + shortcut(x)`` with the
  identity shortcut when the channel count is kept and a 1x1x1 conv unit (same kind) otherwise.
  The reference has one convolution per residual unit and stacks three units per encoder level;
  ``convs=2`` gives the two-convolution form of the textbook residual block.

Identity initialisation: with an affine norm (``"instance"``, ``"batch"``) ``zero_init=True``
starts the last norm with ``gamma = beta = 0``, so the branch outputs exactly 0 and a unit with the
identity shortcut is the identity map. An SE norm cannot output 0 (``gamma = sigmoid(.) > 0``), so
``zero_init`` is refused there.

Every layer and function works for 2D ``[B, H, W, C]`` and 3D ``[B, D, H, W, C]`` tensors.

Example:
    >>> import keras
    >>> x = keras.Input((16, 16, 16, 2))
    >>> y = apply_residual_se_unit(x, 8, kernel_size=3, name="enc1")
    >>> tuple(y.shape)
    (None, 16, 16, 16, 8)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from tfmedseg.models.blocks import matmul_grad_conv

__all__ = [
    "INSTANCE_NORM_EPSILON",
    "NORMALIZATIONS",
    "SE_NORMALIZATIONS",
    "InstanceNormalization",
    "SENormalization",
    "apply_norm_conv",
    "apply_residual_se_unit",
    "make_normalization",
    "spatial_mean",
    "spatial_moments",
]

#: Normalisation kinds of :func:`make_normalization`: SE norm over instance or batch statistics
#: (seed 004's SE U-Net, Tables 1-3), and plain affine instance / batch normalisation.
NORMALIZATIONS = ("se_instance", "se_batch", "instance", "batch")
SE_NORMALIZATIONS = ("se_instance", "se_batch")
#: ``torch.nn.InstanceNorm3d`` / ``BatchNorm3d`` default epsilon.
INSTANCE_NORM_EPSILON = 1e-5
#: PyTorch's BatchNorm momentum 0.1 in Keras' convention.
BATCH_NORM_MOMENTUM = 0.9

_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


def _check_choice(value, allowed, argument):
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {allowed}, got {value!r}")


def _spatial_axes(rank: int) -> list[int]:
    return list(range(1, rank + 1))


def spatial_mean(x, axes: Sequence[int], keepdims: bool = False):
    """Mean over ``axes`` taken one axis at a time (last first): the same value as one
    ``ops.mean(x, axes)``, but accurate in float32 over large volumes.

    TensorFlow's CPU kernel and TFLite's ``MEAN`` both accumulate a multi-axis channels-last mean
    sequentially in float32: over a 48^3 cube (110,592 voxels per channel) the variance of a
    trained SE U-Net's first norm came out 2e-4 (TF) and 7e-4 (TFLite) relative off the float64
    value, and the two runtimes disagreed by 2.5e-3 in the output probabilities. Reducing axis by
    axis (sums of at most one side length) gives 2e-7, so Keras, the SavedModel and TFLite agree.

    Args:
        x: ``[B, *spatial, C]`` tensor.
        axes: The axes to average over.
        keepdims: Keep the reduced axes with length 1.
    """
    for axis in sorted(axes, reverse=True):
        x = ops.mean(x, axis=axis, keepdims=True)
    return x if keepdims else ops.squeeze(x, axis=tuple(axes))


def spatial_moments(x, axes: Sequence[int]):
    """``(mean, variance)`` over ``axes`` (kept with length 1) from :func:`spatial_mean`, computed in
    float32 for half-precision inputs (as ``keras.ops.moments``) and returned in ``x``'s dtype."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    mean = spatial_mean(x, axes, keepdims=True)
    var = spatial_mean(ops.square(x - ops.stop_gradient(mean)), axes, keepdims=True)
    if dtype in ("float16", "bfloat16"):
        mean, var = ops.cast(mean, dtype), ops.cast(var, dtype)
    return mean, var


def _rank_of(shape) -> int:
    rank = len(shape) - 2
    if rank not in (1, 2, 3):
        raise ValueError(f"expected a [B, ..., C] tensor with 1-3 spatial axes, got shape {tuple(shape)}")
    return rank


@keras.saving.register_keras_serializable(package="tfmedseg")
class InstanceNormalization(keras.layers.Layer):
    """Instance normalisation: per sample and channel over the spatial axes, optional affine.

    ``torch.nn.InstanceNorm3d(C, affine=...)`` without running statistics (eps 1e-5).

    Args:
        epsilon: Added to the variance.
        affine: Learn a per-channel scale ``gamma`` and offset ``beta``.
        zero_init: Start ``gamma`` at 0 instead of 1 (identity-initialisable residual branches).

    Input/output: ``[B, *spatial, C]`` float32, same shape.
    """

    def __init__(self, epsilon: float = INSTANCE_NORM_EPSILON, affine: bool = True, zero_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.affine = bool(affine)
        self.zero_init = bool(zero_init)

    def build(self, input_shape):
        self._axes = _spatial_axes(_rank_of(input_shape))
        if self.affine:
            channels = int(input_shape[-1])
            self.gamma = self.add_weight(shape=(channels,), initializer="zeros" if self.zero_init else "ones", name="gamma")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        mean, var = spatial_moments(x, self._axes)
        y = (x - mean) * ops.rsqrt(var + self.epsilon)
        if self.affine:
            y = y * self.gamma + self.beta
        return y

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "affine": self.affine, "zero_init": self.zero_init}


@keras.saving.register_keras_serializable(package="tfmedseg")
class SENormalization(keras.layers.Layer):
    """SE normalisation ``y = sigmoid(g(x)) * norm(x) + tanh(b(x))`` (Iantsen et al. 2020).

    ``g`` and ``b`` are separate squeeze-excitation branches: global average over the spatial
    axes -> ``Dense(C // reduction)`` -> ReLU -> ``Dense(C)`` (biases on, the reference's 1x1x1
    convolutions on a 1-voxel map). ``norm`` has no affine parameters.

    Args:
        reduction: SE bottleneck ratio ``r`` (reference and seed: 2); the bottleneck width is
            ``max(1, C // r)``.
        base: ``"instance"`` (per sample statistics, the reference) or ``"batch"`` (batch
            statistics with moving averages, Keras momentum 0.9 = PyTorch 0.1).
        epsilon: Added to the variance (1e-5, PyTorch's default).

    Input/output: ``[B, *spatial, C]`` float32, same shape. Parameters:
    ``2 * (C * (C // r) + C // r + (C // r) * C + C)``.
    """

    BASES = ("instance", "batch")

    def __init__(self, reduction: int = 2, base: str = "instance", epsilon: float = INSTANCE_NORM_EPSILON, **kwargs):
        super().__init__(**kwargs)
        _check_choice(base, self.BASES, "base")
        if int(reduction) < 1:
            raise ValueError(f"reduction must be a positive int, got {reduction!r}")
        self.reduction = int(reduction)
        self.base = base
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        rank = _rank_of(input_shape)
        self._axes = _spatial_axes(rank)
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.reduction)
        self.gamma_squeeze = keras.layers.Dense(hidden, activation="relu", name="gamma_squeeze")
        self.gamma_excite = keras.layers.Dense(channels, name="gamma_excite")
        self.beta_squeeze = keras.layers.Dense(hidden, activation="relu", name="beta_squeeze")
        self.beta_excite = keras.layers.Dense(channels, name="beta_excite")
        for squeeze, excite in ((self.gamma_squeeze, self.gamma_excite), (self.beta_squeeze, self.beta_excite)):
            squeeze.build((None, channels))
            excite.build((None, hidden))
        if self.base == "batch":
            self.batch_norm = keras.layers.BatchNormalization(
                momentum=BATCH_NORM_MOMENTUM, epsilon=self.epsilon, center=False, scale=False, name="batch_norm")
            self.batch_norm.build(input_shape)

    def call(self, x, training=None):
        pooled = spatial_mean(x, self._axes)  # [B, C]
        gamma = ops.sigmoid(self.gamma_excite(self.gamma_squeeze(pooled)))
        beta = ops.tanh(self.beta_excite(self.beta_squeeze(pooled)))
        if self.base == "batch":
            normed = self.batch_norm(x, training=training)
        else:
            mean, var = spatial_moments(x, self._axes)
            normed = (x - mean) * ops.rsqrt(var + self.epsilon)
        shape = (-1,) + (1,) * len(self._axes) + (int(x.shape[-1]),)
        return ops.reshape(gamma, shape) * normed + ops.reshape(beta, shape)

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "base": self.base, "epsilon": self.epsilon}


def make_normalization(kind: str, name: str, reduction: int = 2, zero_init: bool = False) -> keras.layers.Layer:
    """A normalisation layer of one of the :data:`NORMALIZATIONS` kinds.

    Args:
        kind: ``"se_instance"``, ``"se_batch"`` (:class:`SENormalization` over instance / batch
            statistics), ``"instance"`` (affine :class:`InstanceNormalization`) or ``"batch"``
            (affine ``BatchNormalization``, PyTorch momentum and epsilon).
        name: Layer name.
        reduction: SE bottleneck ratio (SE kinds only).
        zero_init: Start the affine scale at 0 (plain kinds only).

    Raises:
        ValueError: Unknown kind (the message lists the allowed ones), or ``zero_init`` with an SE
            kind (SE norm cannot output zero).
    """
    _check_choice(kind, NORMALIZATIONS, "norm")
    if kind in SE_NORMALIZATIONS:
        if zero_init:
            raise ValueError(f"zero_init needs an affine norm ('instance' or 'batch'): {kind!r} computes "
                             "gamma = sigmoid(.) > 0 and cannot start at zero")
        return SENormalization(reduction, base=kind.split("_", 1)[1], name=name)
    if kind == "instance":
        return InstanceNormalization(zero_init=zero_init, name=name)
    return keras.layers.BatchNormalization(
        momentum=BATCH_NORM_MOMENTUM, epsilon=INSTANCE_NORM_EPSILON,
        gamma_initializer="zeros" if zero_init else "ones", name=name)


def _conv(rank: int, filters: int, kernel_size, use_bias: bool, name: str):
    kernel = (kernel_size,) * rank if isinstance(kernel_size, int) else tuple(kernel_size)
    layer = _CONV[rank] if rank == 1 else (lambda *a, **k: matmul_grad_conv.conv(rank, *a, **k))
    return layer(filters, kernel, padding="same", use_bias=use_bias, kernel_initializer="he_normal", name=name)


def apply_norm_conv(x, filters: int, kernel_size: int | Sequence[int] = 3, norm: str = "se_instance",
                    reduction: int = 2, zero_init: bool = False, name: str = "conv"):
    """One conv unit of the reference: SE kinds conv(bias) -> ReLU -> SE norm, else conv -> norm -> ReLU.

    Sublayers ``f"{name}_conv"``, ``f"{name}_norm"``, ``f"{name}_relu"``.

    Args:
        x: ``[B, *spatial, C]`` float32 tensor.
        filters: Output channels.
        kernel_size: Int or per-axis tuple; ``"same"`` padding, stride 1.
        norm: One of :data:`NORMALIZATIONS`.
        reduction: SE bottleneck ratio.
        zero_init: Affine norms only: the unit starts by outputting exactly 0.
        name: Prefix of the sublayer names.

    Returns:
        ``[B, *spatial, filters]``.
    """
    rank = _rank_of(x.shape)
    se = norm in SE_NORMALIZATIONS
    layer = make_normalization(norm, f"{name}_norm", reduction, zero_init)
    x = _conv(rank, filters, kernel_size, use_bias=se, name=f"{name}_conv")(x)
    if se:
        return layer(keras.layers.ReLU(name=f"{name}_relu")(x))
    return keras.layers.ReLU(name=f"{name}_relu")(layer(x))


def apply_residual_se_unit(x, filters: int, kernel_size: int | Sequence[int] = 3, norm: str = "se_instance",
                           convs: int = 1, reduction: int = 2, zero_init: bool = False, name: str = "res"):
    """Residual unit ``y = units(x) + shortcut(x)`` (reference ``RESseNormConv3d`` for ``convs=1``).

    ``units`` is ``convs`` :func:`apply_norm_conv` units (``kernel_size``); the shortcut is ``x``
    when it has ``filters`` channels, else a 1x1x1 :func:`apply_norm_conv` unit ``f"{name}_proj"``.

    Args:
        x: ``[B, *spatial, C]`` float32 tensor.
        filters: Output channels.
        kernel_size: Kernel of the branch convolutions (the reference's first unit uses 7).
        norm: One of :data:`NORMALIZATIONS`.
        convs: Convolutions in the branch (reference 1).
        reduction: SE bottleneck ratio.
        zero_init: Start the branch at exactly 0 (affine norms only); with the identity shortcut
            the unit is then the identity.
        name: Prefix of the sublayer names (``f"{name}_conv1"``, ..., ``f"{name}_add"``).

    Returns:
        ``[B, *spatial, filters]``.
    """
    if int(convs) < 1:
        raise ValueError(f"convs must be a positive int, got {convs!r}")
    if int(x.shape[-1]) == filters:
        shortcut = x
    else:
        shortcut = apply_norm_conv(x, filters, 1, norm, reduction, name=f"{name}_proj")
    y = x
    for i in range(int(convs)):
        last = i == int(convs) - 1
        y = apply_norm_conv(y, filters, kernel_size, norm, reduction, zero_init and last, name=f"{name}_conv{i + 1}")
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])
