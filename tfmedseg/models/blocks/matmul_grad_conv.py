"""``Conv2D`` / ``Conv3D`` whose kernel gradient is computed as matrix products (oneDNN CPU hosts).

Why: with oneDNN on (``TF_ENABLE_ONEDNN_OPTS=1``, see :mod:`tfmedseg`) TensorFlow 2.21 runs the
kernel gradient of a convolution (``Conv2DBackpropFilter`` / ``Conv3DBackpropFilterV2``) as oneDNN's
``jit:avx2 backward_weights`` on the plain NHWC layout, which on our AVX2 box reaches a third of
the forward convolution's speed; in the U-Net training steps it was 43 % (2D) / 47 % (3D) of the
kernel time (``docs/performance.md``, "Training step"). For a stride-1 "same" convolution with an
odd kernel the kernel gradient is, per kernel tap ``t``, one matrix product

    dK[t] = X_t^T @ dY        X_t: [pixels, C_in] = the input shifted by tap t,  dY: [pixels, C_out]

and SGEMM runs these near the matmul peak once both channel counts are wide enough
(:data:`MIN_CHANNELS`). :func:`kernel_grad_as_matmuls` takes the shifted inputs without copying
them: the input is zero-padded by ``k // 2`` on the far side of each spatial axis only (on the flat
grid the far border of one row, plane or image is the near border of the next: every tap reaching
past an edge lands on zeros), flattened to ``[B * prod(S + k // 2), C_in]`` and given ``front`` zero
rows (the farthest reach back) at both ends; the output gradient is padded the same way (far side,
zeros) and flattened. The tap ``t`` of every output position is then the row ``offset(t)`` further
down the flat input, so ``X_t`` is the contiguous row range ``[offset(t), offset(t) + rows)`` (a
slice TensorFlow hands out as a view of the buffer when a row is a multiple of 64 bytes, so the
channels are zero-padded to a multiple of 16 first) and the padded positions contribute nothing
(their ``dY`` rows are zero). Extra memory: one padded copy of the input and one of the output
gradient, whatever the batch size; the im2col form (2D layers of >= :data:`IM2COL_MIN_CHANNELS`
channels) adds column chunks of at most :data:`IM2COL_BYTES` per call.

:class:`MatmulGradConv2D` / :class:`MatmulGradConv3D` are ``keras.layers.Conv2D`` / ``Conv3D`` (same
arguments, config, weights; like :mod:`tfmedseg.models.blocks.normalization` the classes are
*named* ``Conv2D`` / ``Conv3D`` so that Keras 3 weight files, which address layers by their
snake-cased class name, stay interchangeable with Keras' layers) whose forward and input gradient
are TensorFlow's ops and whose kernel gradient uses the matmuls where :func:`uses_matmul_grad`
holds: TensorFlow backend with oneDNN on the CPU and no GPU, channels last, stride 1, dilation 1,
``groups=1``, ``"same"`` padding, an odd kernel larger than 1, static spatial sizes and
``min(C_in, C_out) >= MIN_CHANNELS[rank]``. Everywhere else they are Keras' layers. Builders get
them through :func:`conv` (``MATMUL_GRAD_DEFAULT``); results agree with Keras' layers to float
rounding (``tests/models/test_matmul_grad_conv.py``).

3D layers whose planes are large enough (:data:`PLANES_MIN_PIXELS`) take a third form,
:func:`kernel_grad_by_planes` (:func:`kernel_grad_form` decides per layer): the 3D kernel gradient as
one 2D kernel gradient per depth tap over all planes, which oneDNN runs as its direct 2D kernel on the
plain layout, where ``Conv3DBackpropFilterV2`` on NDHWC takes oneDNN's im2col + GEMM form (2-3x slower at
64^3 and 32^3, most at thin channels, where the matmuls are memory-bound too).

Example:
    >>> import keras
    >>> y = conv(2, 8, 3, padding="same", use_bias=False)(keras.Input((16, 16, 4)))
    >>> tuple(y.shape)
    (None, 16, 16, 8)
"""

from __future__ import annotations

import functools
import itertools
import os

import keras

__all__ = [
    "IM2COL_BYTES",
    "IM2COL_MIN_CHANNELS",
    "MATMUL_GRAD_DEFAULT",
    "MAX_OVERHEAD",
    "MIN_CHANNELS",
    "MatmulGradConv2D",
    "MatmulGradConv3D",
    "PLANES_MIN_PIXELS",
    "conv",
    "im2col_bytes",
    "is_stride1_same_odd",
    "kernel_grad_as_matmuls",
    "kernel_grad_by_planes",
    "kernel_grad_form",
    "kernel_grad_op",
    "layer_class",
    "matmul_overhead",
    "onednn_fast_path_available",
    "uses_matmul_grad",
]

MATMUL_GRAD_DEFAULT = True
"""Whether :func:`conv` returns the matmul-gradient layers when ``matmul_grad`` is not given."""

#: Smallest ``min(C_in, C_out)`` per spatial rank at which the matmul kernel gradient is used
#: (measured per layer with ``benchmarks/bench_conv_layers.py --net unet2d|unet3d``: below it
#: oneDNN's kernel, which reads each input once, beats the memory-bound thin matmuls).
MIN_CHANNELS = {2: 32, 3: 16}
#: Largest :func:`matmul_overhead` per spatial rank at which the matmul kernel gradient is used (per
#: layer, with one zero border per axis: 2D wins from 32^2 up (1.06), loses at 16^2 (1.13); 3D wins
#: up to 16^3 and 16 x 32^2 (1.20, 1.13); 8^3 (1.42) and 8 x 16^2 (1.27) stay with the op).
MAX_OVERHEAD = {2: 1.07, 3: 1.25}
#: 2D layers with ``min(C_in, C_out)`` at least this take the im2col form (one matmul per column chunk),
#: thinner ones one matmul per tap (per layer: 1.4x faster at 512 channels, 0.9x at 128-256).
IM2COL_MIN_CHANNELS = 512
#: Size bound of one im2col column chunk (bytes per call, whatever the batch size; 8 and 64 MiB ran alike).
IM2COL_BYTES = 8 << 20
#: 3D layers whose planes (``H x W``) have at least this many pixels take :func:`kernel_grad_by_planes`
#: (per layer, ``benchmarks/bench_conv_layers.py --net unet3d``: 2.1-2.7x faster than the op at 64^3 and
#: 32^3, 1.6-2.1x at 16^3, and 1.07-1.26x faster than the per-tap matmuls where those apply; at 8^3 the planes
#: are no faster than the matmuls and the rule of :func:`uses_matmul_grad` stays).
PLANES_MIN_PIXELS = 256
_ROW_ALIGN_BYTES = 64  # TensorFlow's Slice returns a view of dim-0 slices whose rows are a multiple of this


@functools.lru_cache(maxsize=1)
def onednn_fast_path_available() -> bool:
    """True when TensorFlow runs convolutions through oneDNN on the CPU only (decided once)."""
    if keras.backend.backend() != "tensorflow" or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return False
    import tensorflow as tf

    try:
        from tensorflow.python.util import _pywrap_util_port

        mkl = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # pragma: no cover - TF internals moved
        mkl = os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
    return mkl and not tf.config.list_physical_devices("GPU")


def kernel_grad_as_matmuls(x, dy, kernel_size, im2col_bytes: int = 0):
    """Kernel gradient of a stride-1 "same" convolution with an odd kernel, as matrix products.

    Two forms on the same flat padded input (module doc): ``im2col_bytes == 0``: one matmul per
    tap over a view of the flat input (extra memory: one padded copy of ``x`` and of ``dy``);
    ``im2col_bytes > 0`` and a static batch size: the flat rows in chunks, each chunk's taps
    concatenated into a ``[rows, k^d * C_in]`` column matrix of at most ``im2col_bytes`` (whatever
    the batch size) and one matmul per chunk, summed (fewer, larger matmuls: faster on wide layers).

    Args:
        x: Input ``[B, *S, C_in]`` (2 or 3 spatial axes, static spatial sizes and channels).
        dy: Output gradient ``[B, *S, C_out]``.
        kernel_size: Odd kernel sizes ``(k_1, ..., k_d)``.
        im2col_bytes: Size bound of one column chunk in bytes; 0 for the per-tap form.

    Returns:
        ``[k_1, ..., k_d, C_in, C_out]``, the gradient of ``sum(conv(x, K) * dy)`` with respect to ``K``
        (TensorFlow's kernel layout).
    """
    import tensorflow as tf

    kernel_size = [int(k) for k in kernel_size]
    spatial = [int(s) for s in x.shape[1:-1]]
    cin, cout = int(x.shape[-1]), int(dy.shape[-1])
    pads = [k // 2 for k in kernel_size]
    # k // 2 zeros on the far side of each axis only: on the flat grid the far border of a row (plane,
    # image) is also the near border of the next one, so a tap reaching past either edge lands on zeros.
    padded = [s + p for s, p in zip(spatial, pads)]
    strides = [1] * len(padded)  # flat-row stride of each padded spatial axis
    for a in range(len(padded) - 2, -1, -1):
        strides[a] = strides[a + 1] * padded[a + 1]
    per_image = strides[0] * padded[0]
    front = sum(p * s for p, s in zip(pads, strides))  # zero rows before the first image: the farthest reach back
    offsets = [sum(i * s for i, s in zip(tap, strides)) for tap in itertools.product(*(range(k) for k in kernel_size))]
    # Row slices are views only when a row is a multiple of 64 bytes: pad the channels up to that.
    width = -(-cin * x.dtype.size // _ROW_ALIGN_BYTES) * _ROW_ALIGN_BYTES // x.dtype.size
    xp = tf.pad(x, [[0, 0], *([0, p] for p in pads), [0, width - cin]])
    xf = tf.pad(tf.reshape(xp, [-1, width]), [[front, front], [0, 0]])
    df = tf.reshape(tf.pad(dy, [[0, 0], *([0, p] for p in pads), [0, 0]]), [-1, cout])
    if im2col_bytes > 0 and x.shape[0] is not None:
        rows = int(x.shape[0]) * per_image
        chunk = max(1, int(im2col_bytes) // (len(offsets) * width * x.dtype.size))
        parts = []
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cols = tf.concat([xf[o + start:o + start + n] for o in offsets], axis=-1)
            parts.append(tf.matmul(cols, df[start:start + n], transpose_a=True))
        grad = tf.reshape(tf.add_n(parts), [*kernel_size, width, cout])
    else:
        rows = tf.shape(x)[0] * per_image
        taps = [tf.matmul(tf.slice(xf, [o, 0], tf.stack([rows, width])), df, transpose_a=True) for o in offsets]
        grad = tf.reshape(tf.stack(taps), [*kernel_size, width, cout])
    return grad if width == cin else grad[..., :cin, :]


def im2col_bytes(rank: int, cin: int, cout: int) -> int:
    """The ``im2col_bytes`` of :func:`kernel_grad_as_matmuls` for a layer: :data:`IM2COL_BYTES` or 0 (per tap)."""
    return IM2COL_BYTES if rank == 2 and min(int(cin), int(cout)) >= IM2COL_MIN_CHANNELS else 0


def kernel_grad_op(op, x, dy, filter_sizes, **attrs):
    """TensorFlow's kernel-gradient ``op`` of ``x`` and ``dy``, with a bfloat16 gradient summed in float32.

    TensorFlow's CPU kernels of ``Conv2DBackpropFilter``, ``Conv3DBackpropFilterV2`` and
    ``DepthwiseConv2dNativeBackpropFilter`` keep a bfloat16 running sum in bfloat16 (as ``BiasAddGrad`` does,
    :mod:`tfmedseg.training.bias_gradient`): with ``x`` all ones and ``dy`` all ``1 / N`` (exact gradient 1),
    measured on the AVX2 reference CPU: ``Conv2DBackpropFilter`` 0.80 at 8 x 64^2, the depthwise op 0.016 at
    8 x 128^2, :func:`kernel_grad_by_planes`'s 2D calls 0.32 at 32^3 (``tests/models/test_matmul_grad_bf16.py``).
    ``tf.matmul`` sums bfloat16 in float32 (:func:`kernel_grad_as_matmuls` is exact there). So a bfloat16
    ``x`` / ``dy`` runs the op on their float32 casts (one extra pass over each) and the result is cast back.

    Args:
        op: ``tf.raw_ops.Conv2DBackpropFilter``, ``Conv3DBackpropFilterV2`` or ``DepthwiseConv2dNativeBackpropFilter``.
        x: The op's ``input`` ``[B, *S, C_in]`` (float32 or bfloat16).
        dy: Its ``out_backprop`` ``[B, *S', C_out]``, ``x``'s dtype.
        filter_sizes: The kernel's shape (int32 ``[rank + 2]``).
        **attrs: The op's other attributes (``strides``, ``padding``, ...).

    Returns:
        The kernel gradient, shape ``filter_sizes``, ``x``'s dtype.
    """
    import tensorflow as tf

    if x.dtype != tf.bfloat16:
        return op(input=x, filter_sizes=filter_sizes, out_backprop=dy, **attrs)
    grad = op(input=tf.cast(x, tf.float32), filter_sizes=filter_sizes, out_backprop=tf.cast(dy, tf.float32), **attrs)
    return tf.cast(grad, tf.bfloat16)


def kernel_grad_by_planes(x, dy, kernel_size):
    """Kernel gradient of a stride-1 "same" 3D convolution as ``k_d`` 2D kernel gradients over the planes.

    Tap ``t`` along depth pairs input plane ``d + t - k_d // 2`` with output-gradient plane ``d``; over
    all planes of all images as one 2D batch that is TensorFlow's ``Conv2DBackpropFilter`` of the
    depth-shifted input planes with ``dY``'s planes. On oneDNN this runs the direct ``jit:avx2``
    2D kernel on the plain NHWC layout, while ``Conv3DBackpropFilterV2`` on NDHWC falls back to
    oneDNN's im2col + GEMM form (``x64:gemm:jit``), memory-bound at thin channels: at 64^3 with 1 and 8
    input channels the op took 2.4x and 2.7x the time of these three 2D calls (``docs/performance.md``).
    Batch 1 (static): the shifted planes are views of ``x`` and ``dy`` (taps past the first / last plane
    drop that plane); otherwise ``x`` and ``dy`` are zero-padded by ``k_d // 2`` planes per image and the
    flat plane ranges are views of them (a padding plane of ``dy`` pairs with whatever input plane and
    adds nothing).

    Args:
        x: Input ``[B, D, H, W, C_in]`` (static ``D, H, W, C_in``; float32, or bfloat16: summed in float32,
            :func:`kernel_grad_op`).
        dy: Output gradient ``[B, D, H, W, C_out]``, ``x``'s dtype.
        kernel_size: Odd kernel sizes ``(k_d, k_h, k_w)``.

    Returns:
        ``[k_d, k_h, k_w, C_in, C_out]``, the gradient of ``sum(conv3d(x, K) * dy)`` with respect to ``K``.
    """
    import tensorflow as tf

    kd, kh, kw = (int(k) for k in kernel_size)
    p = kd // 2
    depth, height, width, cin = (int(s) for s in x.shape[1:])
    cout = int(dy.shape[-1])

    def grad2d(planes, dplanes):
        return kernel_grad_op(tf.raw_ops.Conv2DBackpropFilter, planes, dplanes, [kh, kw, cin, cout], strides=[1, 1, 1, 1],
                              padding="SAME")

    if x.shape[0] == 1:
        xf, df = tf.reshape(x, [depth, height, width, cin]), tf.reshape(dy, [depth, height, width, cout])
        taps = []
        for t in range(kd):
            s = t - p  # input plane d + s pairs with dY plane d, for the d where both exist
            if abs(s) >= depth:
                taps.append(tf.zeros([kh, kw, cin, cout], x.dtype))
            else:
                taps.append(grad2d(xf[max(s, 0):depth + min(s, 0)], df[max(-s, 0):depth - max(s, 0)]))
        return tf.stack(taps)
    pad = [[0, 0], [p, p], [0, 0], [0, 0], [0, 0]]
    xf = tf.reshape(tf.pad(x, pad), [-1, height, width, cin])
    df = tf.reshape(tf.pad(dy, pad), [-1, height, width, cout])
    n = tf.shape(df)[0] - 2 * p  # dY's flat plane p + i pairs with x's flat plane i + t for tap t
    df = df[p:p + n]
    return tf.stack([grad2d(xf[t:t + n], df) for t in range(kd)])


def _backprop_input(rank: int):
    import tensorflow as tf

    return tf.raw_ops.Conv2DBackpropInput if rank == 2 else tf.raw_ops.Conv3DBackpropInputV2


def _conv_with_kernel_grad_form(x, kernel, form: str = "matmuls"):
    """``conv(x, kernel)`` ("same", stride 1) with TensorFlow's forward and input gradient; kernel gradient
    by ``form``: ``"matmuls"`` (:func:`kernel_grad_as_matmuls`) or ``"planes"`` (:func:`kernel_grad_by_planes`)."""
    import tensorflow as tf

    rank = len(kernel.shape) - 2
    strides = [1] * (rank + 2)

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.convolution(x, kernel, strides=1, padding="SAME")

        def grad(dy):
            dx = _backprop_input(rank)(input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                                       strides=strides, padding="SAME")
            if form == "planes":
                return dx, kernel_grad_by_planes(x, dy, kernel.shape[:rank])
            return dx, kernel_grad_as_matmuls(x, dy, kernel.shape[:rank], im2col_bytes(rank, *kernel.shape[-2:]))

        return y, grad

    y = conv(x, kernel)
    y.set_shape(x.shape[:-1].concatenate(kernel.shape[-1:]))
    return y


def matmul_overhead(spatial, kernel_size, cin: int, itemsize: int = 4) -> float:
    """Work of the matmul kernel gradient per useful multiply-add: padded / true pixels x padded / true channels.

    The matmuls run over the zero-padded grid (``prod(S + k // 2) / prod(S)``: 1.03 at 64^2, 1.06 at
    32^2, 1.13 at 16^2, 1.42 at 8^3 for 3x3(x3) kernels) and over channels padded to 64-byte rows (24 -> 32: 1.33).
    """
    padded = valid = 1
    for s, k in zip(spatial, kernel_size):
        padded, valid = padded * (int(s) + int(k) // 2), valid * int(s)
    width = -(-int(cin) * itemsize // _ROW_ALIGN_BYTES) * _ROW_ALIGN_BYTES // itemsize
    return padded / valid * width / int(cin)


def is_stride1_same_odd(layer) -> bool:
    """Whether the Conv ``layer`` is a stride-1, undilated, ungrouped, channels-last ``"same"``
    convolution with an odd kernel larger than 1 (the kind whose kernel gradient is
    :func:`kernel_grad_as_matmuls`; also :class:`~tfmedseg.models.blocks.onednn_conv.OneDNNConv2D`'s fast path)."""
    k = tuple(layer.kernel_size)
    return (
        layer.data_format == "channels_last"
        and all(s == 1 for s in layer.strides)
        and all(d == 1 for d in layer.dilation_rate)
        and layer.groups == 1
        and layer.padding == "same"
        and all(s % 2 == 1 for s in k)
        and max(k) > 1
    )


def uses_matmul_grad(layer, input_shape) -> bool:
    """Whether ``layer`` (a Conv2D/Conv3D) with input ``input_shape`` takes the matmul kernel gradient here.

    Besides the convolution's kind (module doc): ``min(C_in, C_out) >= MIN_CHANNELS[rank]`` and
    :func:`matmul_overhead` at most ``MAX_OVERHEAD[rank]`` (small maps: oneDNN's kernel is faster).
    """
    rank = layer.rank
    k = tuple(layer.kernel_size)
    cin = input_shape[-1]
    spatial = input_shape[1:-1]
    return (
        rank in MIN_CHANNELS
        and is_stride1_same_odd(layer)
        and cin is not None
        and all(s is not None for s in spatial)
        and min(int(cin), layer.filters) >= MIN_CHANNELS[rank]
        and matmul_overhead(spatial, k, cin) <= MAX_OVERHEAD[rank]
        and onednn_fast_path_available()
    )


def kernel_grad_form(layer, input_shape) -> str:
    """How ``layer`` (a Conv2D/Conv3D) with input ``input_shape`` computes its kernel gradient here.

    ``"planes"`` (:func:`kernel_grad_by_planes`): 3D, the convolution kind of :func:`is_stride1_same_odd`,
    static depth / planes / channels, planes of at least :data:`PLANES_MIN_PIXELS` pixels, oneDNN on the
    CPU; else ``"matmuls"`` where :func:`uses_matmul_grad` holds; else ``"op"`` (TensorFlow's).
    """
    if layer.rank == 3 and is_stride1_same_odd(layer):
        dims = input_shape[1:]
        if all(d is not None for d in dims) and int(dims[1]) * int(dims[2]) >= PLANES_MIN_PIXELS \
                and onednn_fast_path_available():
            return "planes"
    return "matmuls" if uses_matmul_grad(layer, input_shape) else "op"


class _MatmulGradMixin:
    matmul_grad = True  # subclasses may turn it off per layer (``ConcatConv2D(matmul_grad=False)``)

    def convolution_op(self, inputs, kernel):
        form = kernel_grad_form(self, tuple(inputs.shape)) if self.matmul_grad else "op"
        if form == "op":
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return _conv_with_kernel_grad_form(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel), form)


@keras.saving.register_keras_serializable(package="tfmedseg", name="MatmulGradConv2D")
class Conv2D(_MatmulGradMixin, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with the matmul kernel gradient where it pays (module doc).

    Takes exactly ``keras.layers.Conv2D``'s arguments; input ``[B, H, W, C_in]``, output ``[B, H', W', filters]``.
    """


@keras.saving.register_keras_serializable(package="tfmedseg", name="MatmulGradConv3D")
class Conv3D(_MatmulGradMixin, keras.layers.Conv3D):
    """``keras.layers.Conv3D`` with the matmul kernel gradient where it pays (module doc).

    Takes exactly ``keras.layers.Conv3D``'s arguments; input ``[B, D, H, W, C_in]``, output ``[B, D', H', W', filters]``.
    """


MatmulGradConv2D = Conv2D
MatmulGradConv3D = Conv3D


def conv(rank: int, filters: int, kernel_size, matmul_grad: bool | None = None, **kwargs):
    """The convolution layer builders use: :class:`MatmulGradConv2D` / ``3D`` by default, Keras' otherwise.

    Args:
        rank: 2 or 3 spatial axes.
        filters: Output channels.
        kernel_size: Int or tuple.
        matmul_grad: ``True``: the matmul-gradient layer; ``False``: ``keras.layers.Conv2D`` / ``Conv3D``;
            ``None``: :data:`MATMUL_GRAD_DEFAULT`.
        **kwargs: Any other ``keras.layers.Conv2D`` / ``Conv3D`` argument.

    Returns:
        An unbuilt layer.
    """
    return layer_class(rank, matmul_grad, (Conv2D, Conv3D), (keras.layers.Conv2D, keras.layers.Conv3D))(
        filters, kernel_size, **kwargs)


def layer_class(rank: int, matmul_grad: bool | None, ours: tuple[type, type], keras_own: tuple[type, type]) -> type:
    """The class :func:`conv` and :func:`~tfmedseg.models.blocks.matmul_grad_conv_transpose.conv_transpose` build.

    Args:
        rank: 2 or 3 spatial axes.
        matmul_grad: ``True``: from ``ours``; ``False``: from ``keras_own``; ``None``: :data:`MATMUL_GRAD_DEFAULT`
            (read at the call, so a switch set while a model is built holds).
        ours / keras_own: The 2D and 3D classes of each kind.

    Raises:
        ValueError: ``rank`` is not 2 or 3.
    """
    if rank not in (2, 3):
        raise ValueError(f"rank must be 2 or 3, got {rank}")
    fast = MATMUL_GRAD_DEFAULT if matmul_grad is None else matmul_grad
    return (ours if fast else keras_own)[rank - 2]
