"""A convolution of the channel concatenation of several inputs, computed without the concatenation.

A U-Net decoder convolves ``concat([upsampled, skip])``. Convolution is linear in its input
channels, so with the kernel split along its input-channel axis ``K = [K_a; K_b]``::

    conv(concat([a, b]), K) == conv(a, K_a) + conv(b, K_b)

:class:`ConcatConv2D` / :class:`ConcatConv3D` compute the right-hand side: no concatenated tensor is
written forward, no slices of its gradient backward, and each kernel gradient is taken over an
input with the thinner channel count. On oneDNN (AVX2, TensorFlow 2.21) the weight gradient of a
3x3 convolution with ``C_in = 2 C_out`` is about twice as slow per FLOP as with ``C_in = C_out``;
for the 2D U-Net's 256^2 x (16 + 16) -> 16 decoder convolution the split took 0.60x the CPU time of
concat + conv forward and backward (``docs/performance.md``, "Training step (items 1-2)").

The layers *are* ``keras.layers.Conv2D`` / ``Conv3D`` (same arguments, config, one ``kernel`` of
shape ``[*k, sum(C_in), C_out]`` and ``bias``), called on a list of tensors instead of one: a
model built with them has the parameters, weights layout and outputs of ``Concatenate`` followed
by the Keras convolution (tested in ``tests/models/test_concat_conv.py``). Channels last only;
``groups`` must be 1.

Example:
    >>> import keras
    >>> a, b = keras.Input((32, 32, 8)), keras.Input((32, 32, 8))
    >>> ConcatConv2D(8, 3, padding="same", use_bias=False)([a, b]).shape
    (None, 32, 32, 8)
"""

from __future__ import annotations

import itertools

import keras
from keras import ops

from tfmedseg.models.blocks.matmul_grad_conv import MatmulGradConv2D, MatmulGradConv3D

__all__ = ["ConcatConv2D", "ConcatConv3D", "concat_conv"]


class _ConcatConvMixin:
    """The list-input ``build`` / ``call`` shared by the 2D and 3D layers."""

    def __init__(self, *args, matmul_grad: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul_grad = bool(matmul_grad)
        self.input_spec = None  # a list of inputs (Conv's spec expects one); checked in build

    def get_config(self):
        return {**super().get_config(), "matmul_grad": self.matmul_grad}

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape] if isinstance(input_shape[0], list | tuple) else [input_shape]
        if len(shapes) < 2 or any(len(s) != self.rank + 2 for s in shapes):
            raise ValueError(f"{type(self).__name__} takes a list of >= 2 rank-{self.rank + 2} inputs, got {shapes}")
        if self.data_format != "channels_last" or self.groups != 1:
            raise ValueError(f"{type(self).__name__} supports channels_last and groups=1 only")
        self._split_channels = [int(s[-1]) for s in shapes]
        super().build(shapes[0][:-1] + (sum(self._split_channels),))
        self.input_spec = None  # a list of inputs; the shapes were checked above

    def call(self, inputs):
        # One split (its gradient is one concat) rather than a strided slice per input (each slice's
        # gradient writes a zero-padded full kernel, then they are summed): 0.94-0.95x at 32^2-128^2.
        ends = list(itertools.accumulate(self._split_channels))[:-1]
        outputs = None
        for x, kernel in zip(inputs, ops.split(self.kernel, ends, axis=-2)):
            y = self.convolution_op(x, kernel)
            outputs = y if outputs is None else ops.add(outputs, y)
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1,) * (self.rank + 1) + (self.filters,)))
        return outputs if self.activation is None else self.activation(outputs)

    def compute_output_shape(self, input_shape):
        if input_shape and isinstance(input_shape[0], list | tuple):  # the list of input shapes
            shapes = [tuple(s) for s in input_shape]
            input_shape = shapes[0][:-1] + (sum(int(s[-1]) for s in shapes),)
        return super().compute_output_shape(input_shape)  # (Conv's build calls it with the merged shape)


@keras.saving.register_keras_serializable(package="tfmedseg")
class ConcatConv2D(_ConcatConvMixin, MatmulGradConv2D):
    """``Conv2D(concat(inputs, axis=-1))`` as a sum of one convolution per input (see module doc).

    Input: a list of ``[B, H, W, C_i]`` tensors; output ``[B, H', W', filters]`` as ``Conv2D``.
    """


@keras.saving.register_keras_serializable(package="tfmedseg")
class ConcatConv3D(_ConcatConvMixin, MatmulGradConv3D):
    """``Conv3D(concat(inputs, axis=-1))`` as a sum of one convolution per input (see module doc).

    Input: a list of ``[B, D, H, W, C_i]`` tensors; output ``[B, D', H', W', filters]`` as ``Conv3D``.
    """


def concat_conv(rank: int, filters: int, kernel_size, **kwargs):
    """``ConcatConv2D`` (``rank=2``) or ``ConcatConv3D`` (``rank=3``) with ``Conv`` keyword arguments."""
    if rank not in (2, 3):
        raise ValueError(f"rank must be 2 or 3, got {rank}")
    return (ConcatConv2D if rank == 2 else ConcatConv3D)(filters, kernel_size, **kwargs)
