"""Recurrent residual convolution (RRCNN) block of R2U-Net (Alom et al. 2018), seed 004 Table 5.

Seed 004 gives "time stamp 2" and "kernel size 3" (Fig. 1 caption, Table 5) and no formula; the
definition is R2U-Net's (Alom, Hasan, Yakopcic, Taha, Asari, "Recurrent Residual Convolutional
Neural Network based on U-Net (R2U-Net)", arXiv:1802.06955) as in its widely used reference code:

* :class:`RecurrentConv` (``Recurrent_block``): one convolution unit ``f`` (conv k3 -> norm -> ReLU)
  whose weights are shared across the time steps; ``x1 = f(x)``, then ``steps`` times
  ``x1 = f(x + x1)``. The convolution runs ``steps + 1`` times (3 for ``t = 2``).
* :func:`apply_rrcnn` (``RRCNN_block``): ``x0 = conv1x1x1(x)`` (channel match, with bias),
  ``y = RecurrentConv(RecurrentConv(x0))`` (two recurrent blocks with their own weights),
  ``out = x0 + y``.

The normalisation is any kind of :data:`tfmedseg.models.blocks.se_norm.NORMALIZATIONS`; the seed's
Table 5 used InstanceNorm3d (default here: ``"instance"``, affine, so that ``zero_init=True`` makes
``f`` output exactly 0 and the block the identity on ``x0``). The order inside ``f`` follows
:func:`~tfmedseg.models.blocks.se_norm.apply_norm_conv` (conv -> norm -> ReLU for plain norms,
conv -> ReLU -> SE norm for SE norms). Rank-agnostic (2D and 3D).

Example:
    >>> import keras
    >>> x = keras.Input((8, 8, 8, 4))
    >>> tuple(apply_rrcnn(x, 6, name="rr").shape)
    (None, 8, 8, 8, 6)
"""

from __future__ import annotations

import keras

from tfmedseg.models.blocks.se_norm import (
    NORMALIZATIONS,
    SE_NORMALIZATIONS,
    make_normalization,
)

__all__ = ["RecurrentConv", "apply_rrcnn"]

_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}


@keras.saving.register_keras_serializable(package="tfmedseg")
class RecurrentConv(keras.layers.Layer):
    """R2U-Net recurrent convolution: ``x1 = f(x)``; ``steps`` times ``x1 = f(x + x1)``, one ``f``.

    Args:
        filters: Channels of input and output (the recurrence adds ``x`` to ``f``'s output).
        kernel_size: Convolution kernel (seed 004: 3), ``"same"`` padding.
        steps: Recurrent steps ``t`` (seed 004: 2); ``f`` runs ``steps + 1`` times.
        norm: One of :data:`~tfmedseg.models.blocks.se_norm.NORMALIZATIONS` (default ``"instance"``).
        reduction: SE bottleneck ratio for SE norms.
        zero_init: Start the (affine) norm scale at 0, so that ``f`` and the layer output 0.

    Input: ``[B, *spatial, filters]``; output the same shape.

    Raises:
        ValueError: Bad arguments, or an input whose channel count is not ``filters``.
    """

    def __init__(self, filters: int, kernel_size: int = 3, steps: int = 2, norm: str = "instance",
                 reduction: int = 2, zero_init: bool = False, **kwargs):
        super().__init__(**kwargs)
        if norm not in NORMALIZATIONS:
            raise ValueError(f"norm must be one of {NORMALIZATIONS}, got {norm!r}")
        if int(steps) < 0 or int(filters) < 1 or int(kernel_size) < 1:
            raise ValueError(f"need filters >= 1, kernel_size >= 1, steps >= 0; got {filters}, {kernel_size}, {steps}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.steps = int(steps)
        self.norm = norm
        self.reduction = int(reduction)
        self.zero_init = bool(zero_init)
        self._se = norm in SE_NORMALIZATIONS

    def build(self, input_shape):
        rank = len(input_shape) - 2
        if rank not in _CONV:
            raise ValueError(f"expected a [B, ..., C] tensor with 1-3 spatial axes, got {tuple(input_shape)}")
        if int(input_shape[-1]) != self.filters:
            raise ValueError(f"RecurrentConv {self.name}: input has {input_shape[-1]} channels, needs {self.filters}")
        self.conv = _CONV[rank](self.filters, (self.kernel_size,) * rank, padding="same", use_bias=self._se,
                                kernel_initializer="he_normal", name="conv")
        self.conv.build(input_shape)
        self.norm_layer = make_normalization(self.norm, "norm", self.reduction, self.zero_init)
        self.norm_layer.build(input_shape)

    def unit(self, x, training=None):
        """The shared unit ``f``: conv -> norm -> ReLU (SE norms: conv -> ReLU -> SE norm)."""
        y = self.conv(x)
        if self._se:
            return self.norm_layer(keras.ops.relu(y), training=training)
        return keras.ops.relu(self.norm_layer(y, training=training))

    def call(self, x, training=None):
        x1 = self.unit(x, training)
        for _ in range(self.steps):
            x1 = self.unit(x + x1, training)
        return x1

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "steps": self.steps,
                "norm": self.norm, "reduction": self.reduction, "zero_init": self.zero_init}


def apply_rrcnn(x, filters: int, steps: int = 2, kernel_size: int = 3, norm: str = "instance",
                reduction: int = 2, zero_init: bool = False, name: str = "rrcnn"):
    """RRCNN block: ``x0 = conv1x1(x)``; ``out = x0 + R2(R1(x0))`` with two :class:`RecurrentConv`.

    Sublayers ``f"{name}_proj"`` (1x1x1 conv with bias), ``f"{name}_rec1"``, ``f"{name}_rec2"``,
    ``f"{name}_add"``.

    Args:
        x: ``[B, *spatial, C]`` float32 tensor.
        filters: Output channels.
        steps: Recurrent steps of each recurrent block (seed 004: 2).
        kernel_size: Kernel of the recurrent convolutions (seed 004: 3).
        norm: Normalisation kind inside the recurrent blocks.
        reduction: SE bottleneck ratio for SE norms.
        zero_init: Start both recurrent blocks at 0: the block is then ``conv1x1(x)``.
        name: Prefix of the sublayer names.

    Returns:
        ``[B, *spatial, filters]``.
    """
    rank = len(x.shape) - 2
    x0 = _CONV[rank](filters, (1,) * rank, use_bias=True, name=f"{name}_proj")(x)
    y = x0
    for i in (1, 2):
        y = RecurrentConv(filters, kernel_size, steps, norm, reduction, zero_init, name=f"{name}_rec{i}")(y)
    return keras.layers.Add(name=f"{name}_add")([x0, y])
