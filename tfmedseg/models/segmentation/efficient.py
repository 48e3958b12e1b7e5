"""Efficient 2.5D and 3D encoder-decoder networks for liver / tumour segmentation (seed 002).

Reference: the UNICAMP 2020 MSc thesis behind seed 002 (Pedrini, Telles advisors), Sec. 3.1.4-3.1.5
and Appendix A: five blocks, stem -> encoder -> head -> decoder -> output, with an
EfficientNet-B0-shaped encoder whose inverted residuals are replaced by MobileNetV2 (EfficientNet
MBConv), MobileNetV3, ShuffleNetV2 or (3D only) DSTS blocks.

* 2.5D: ``image`` ``[B, H, W, 9]`` (9 adjacent CT slices as channels, [0, 1]) ->
  ``probabilities`` ``[B, H, W, classes]`` for the middle slice (softmax over the last axis).
* 3D: ``image`` ``[B, 8, H, W, 1]`` -> ``probabilities`` ``[B, 4, H, W, classes]`` for the
  middle 4 slices.

Registered builders (``tfmedseg.models.registry.build(name, variant=...)``):
``mobilenetv2_2d``, ``mobilenetv3_2d``, ``shufflenetv2_2d``, ``mobilenetv2_3d``,
``mobilenetv3_3d``, ``shufflenetv2_3d``, ``dsts_3d``; ``variant`` in ``("top", "default",
"bottom")`` selects the Appendix A table (top = more shallow layers, bottom = more deep layers,
thesis L1060).

Architecture (the thesis gives no layer-level description of stem, head, decoder or output;
these are our choices, sized so that the default configurations reproduce Tables 4.2/4.3):

* **Stem**: the input itself is the shortcut to the output block ("before reducing the input
  dimensionality"; 3D: centre-cropped to the output slices). The reduction is a learned
  patchify: depthwise ``s x s`` convolution with stride ``s`` (3D: a ``1 x s x s`` plain
  convolution, the input has one channel) -> 1x1 conv to the Layer1 input width -> BN -> act.
  ``s = 4`` in 2D, so Layer1 runs at 1/4 resolution (EfficientNet-B0's stages at 64 x 64 give
  the 120.8M of the 123.9M MACs of Table 4.2); ``s = 8`` in-plane and 1 in depth in 3D
  (Layer1 at 8 x 32 x 32: the MobileNetV2 and V3 encoders then leave the same remainder,
  ~14M MACs / 0.29M parameters, of Table 4.3).
* **Encoder**: the Appendix A tables; 3D strides as tabulated, so depth goes 8 -> 8 -> 8 -> 4
  (Layer3) -> 2 (Layer4) (the text's "first and third rescaling", L834, disagrees with the
  tables; we follow the tables).
* **Head**: ``k x k (x k)`` conv -> BN -> act to ``head_filters``, ``k = head_kernel_size``
  (1 in 2D; 3 in 3D, where the head at 2 x 2 x 2 voxels is the cheapest place for the weights
  Table 4.3 counts beyond the encoder).
* **Decoder**: U-Net style (concatenation) at the outputs of Layer5, Layer3, Layer2 and Layer1:
  upsample (bilinear in 2D, nearest in 3D) -> concat the skip -> 1x1 conv-BN-act to
  ``decoder_filters[i]`` -> depthwise 3 (x 3) conv -> BN -> act. In 3D a skip deeper than the
  output slice count is centre-cropped in depth ("cropped on the encoder side", L834) and
  depth is upsampled only where the skip is deeper than the current map.
* **Output**: 1x1 conv to ``classes`` at 1/4 (3D 1/8) resolution -> upsample to the input size
  -> concat the stem shortcut -> 1x1 conv (bias) -> softmax, named ``probabilities``.

Where the thesis is silent or contradicts itself (spec Sec. 3, 8) we chose:

* MobileNetV2 = EfficientNet MBConv with swish; MobileNetV3: ReLU in Layer1-3, h-swish in
  Layer4-7, hard-sigmoid SE; ShuffleNetV2 and DSTS: ReLU.
* ShuffleNetV2 tables have no expansion column although they are "based on MobileNet-V2
  hyperparameters": the processing branch is widened by ``expand_ratio`` (2D 6, as MobileNetV2;
  3D 2).
* The DSTS tables lose their expansion values; the text says the DSTS default has "its width
  reduced by half" (L1103): all three DSTS configurations use the tabulated widths halved and
  no expansion (``expand_ratio`` 1).
* Table A.18 (3D ShuffleNetV2 default) is printed with 2D strides; we use the 3D strides and
  its printed widths (stem 32). The captions of A.19 ("deeper") and A.20 ("shallower") are
  swapped relative to their content (A.20 piles repetitions in the deep layers, and Table 4.3's
  bottom row has the most parameters): top = A.19, bottom = A.20.
* ``head_filters``/``decoder_filters`` per network (``_CALIBRATION``) were sized so that the
  *default* configuration matches Tables 4.2/4.3 (within 3 % parameters and 5 % MACs, see
  ``benchmarks/bench_efficient_fidelity.py``); top and bottom share their default's stem, head
  and decoder, so they differ only by the encoder tables, as in the thesis.

Example:
    >>> from tfmedseg.models import registry
    >>> model = registry.build("mobilenetv2_2d", variant="default", input_shape=(64, 64, 9))
    >>> tuple(model.output.shape)
    (None, 64, 64, 2)
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import keras

from tfmedseg.errors import ModelBuildError
from tfmedseg.models.blocks import common
from tfmedseg.models.blocks.mobilenet import apply_mbconv, apply_mobilenetv3_block
from tfmedseg.models.blocks.separable3d import DEPTHWISE3D_IMPLEMENTATIONS, apply_dsts_block
from tfmedseg.models.blocks.shufflenet import apply_shufflenet_v2_unit
from tfmedseg.models.registry import register

__all__ = ["FAMILIES", "VARIANTS", "StageConfig", "stage_configs", "EfficientSegmenter", "mobilenetv2_2d",
           "mobilenetv3_2d", "shufflenetv2_2d", "mobilenetv2_3d", "mobilenetv3_3d", "shufflenetv2_3d", "dsts_3d"]

FAMILIES = ("mobilenetv2", "mobilenetv3", "shufflenetv2", "dsts")
VARIANTS = ("top", "default", "bottom")
RANKS = (2, 3)


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One encoder stage (one row of an Appendix A table).

    Attributes:
        repeats: Number of blocks.
        kernel_size: Depthwise kernel length.
        strides: Stride of the first block, per spatial axis.
        expand_ratio: Expansion of the inverted residual / processing branch.
        filters_in: Input channels of the first block.
        filters_out: Output channels.
        se_ratio: Squeeze-and-excitation ratio (0: none).
        activation: Block activation.
    """

    repeats: int
    kernel_size: int
    strides: tuple[int, ...]
    expand_ratio: float
    filters_in: int
    filters_out: int
    se_ratio: float
    activation: str


_KERNELS = (3, 3, 5, 3, 5, 5, 3)
_STRIDES = {2: ((1, 1), (2, 2), (2, 2), (2, 2), (1, 1), (2, 2), (1, 1)),
            3: ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1), (1, 2, 2), (1, 1, 1))}
_B0_WIDTHS = (32, 16, 24, 40, 80, 112, 192, 320)
_HALF_WIDTHS = (16, 8, 12, 20, 40, 56, 96, 160)
_MBV2_EXPAND = (1, 6, 6, 6, 6, 6, 6)
_MBV3_EXPAND = (1, 4, 3, 3, 6, 6, 6)
_MBV3_SE = (0, 0, 0.25, 0, 0.25, 0.25, 0.25)
_MBV3_ACT = ("relu",) * 3 + ("hard_swish",) * 4

# (family, rank) -> widths (stem, Layer1..7 out), per-stage expansion, SE, activations,
# {variant: repeats}. Table numbers of the thesis' Appendix A in the comments.
_TABLES = {
    ("mobilenetv2", 2): (_B0_WIDTHS, _MBV2_EXPAND, (0.25,) * 7, ("swish",) * 7, {
        "default": (1, 2, 2, 3, 3, 4, 1),  # A.3 (EfficientNet-B0)
        "bottom": (1, 1, 1, 3, 4, 4, 2),  # A.4
        "top": (2, 2, 2, 2, 2, 3, 1)}),  # A.5
    ("mobilenetv3", 2): (_B0_WIDTHS, _MBV3_EXPAND, _MBV3_SE, _MBV3_ACT, {
        "default": (1, 2, 2, 3, 3, 4, 1),  # A.6
        "bottom": (1, 1, 2, 3, 4, 4, 3),  # A.7
        "top": (2, 2, 2, 2, 2, 3, 1)}),  # A.8
    ("shufflenetv2", 2): (_B0_WIDTHS, (6,) * 7, (0.25,) * 7, ("relu",) * 7, {
        "default": (1, 2, 2, 3, 3, 4, 1),  # A.9
        "bottom": (1, 1, 1, 3, 4, 4, 2),  # A.10
        "top": (3, 3, 2, 2, 2, 2, 1)}),  # A.11
    ("mobilenetv2", 3): (_HALF_WIDTHS, _MBV2_EXPAND, (0.25,) * 7, ("swish",) * 7, {
        "default": (1, 2, 2, 3, 3, 4, 1),  # A.12
        "bottom": (1, 2, 2, 3, 4, 4, 4),  # A.13
        "top": (2, 2, 2, 2, 2, 3, 1)}),  # A.14
    ("mobilenetv3", 3): ((16, 12, 12, 20, 40, 56, 96, 160), _MBV3_EXPAND, _MBV3_SE, _MBV3_ACT, {
        "default": (1, 2, 3, 3, 3, 4, 2),  # A.15
        "bottom": (1, 2, 3, 3, 4, 4, 5),  # A.16
        "top": (2, 2, 2, 2, 2, 2, 1)}),  # A.17
    ("dsts", 3): ((8, 12, 16, 20, 40, 56, 96, 160), (1,) * 7, (0.25,) * 7, ("relu",) * 7, {
        "default": (3, 4, 4, 4, 4, 4, 4),  # A.21 (widths halved, L1103)
        "bottom": (2, 4, 4, 4, 4, 5, 5),  # A.22
        "top": (4, 3, 2, 2, 2, 2, 2)}),  # A.23
}
# 3D ShuffleNetV2: A.18 (default) is printed with B0 widths; A.19/A.20 with 16 -> 16 -> 32 ...
_SHUFFLE3D_WIDTHS = {"default": _B0_WIDTHS, "top": (16, 16, 32, 40, 80, 112, 192, 320),
                     "bottom": (16, 16, 32, 40, 80, 112, 192, 320)}
_SHUFFLE3D_REPEATS = {"default": (1, 2, 2, 3, 3, 4, 1),  # A.18
                      "top": (2, 2, 2, 3, 3, 4, 2),  # A.19 (caption says "deeper")
                      "bottom": (1, 2, 4, 4, 4, 5, 5)}  # A.20 (caption says "shallower")

# (family, rank) -> (head_filters, head_kernel_size, decoder_filters deep -> shallow), sized so
# that the default configuration matches Tables 4.2/4.3 (see the module docstring).
_CALIBRATION = {
    ("mobilenetv2", 2): (256, 1, (32, 16, 8, 4)),
    ("mobilenetv3", 2): (384, 1, (64, 32, 16, 16)),
    ("shufflenetv2", 2): (128, 1, (32, 32, 64, 120)),
    ("mobilenetv2", 3): (64, 3, (48, 24, 16, 16)),
    ("mobilenetv3", 3): (64, 3, (48, 24, 16, 24)),
    ("shufflenetv2", 3): (110, 3, (48, 24, 16, 4)),
    ("dsts", 3): (460, 3, (64, 32, 16, 44)),
}
_STEM_STRIDES = {2: (4, 4), 3: (1, 8, 8)}
_MAIN_ACTIVATION = {"mobilenetv2": "swish", "mobilenetv3": "hard_swish", "shufflenetv2": "relu", "dsts": "relu"}
_DEFAULT_INPUT = {2: (256, 256, 9), 3: (8, 256, 256, 1)}


def _check(value, allowed, argument):
    if value not in allowed:
        raise ModelBuildError(f"must be one of {allowed}, got {value!r}", path=argument)


def stage_configs(family: str, rank: int, variant: str = "default") -> tuple[StageConfig, ...]:
    """The seven encoder stages of an Appendix A configuration.

    Args:
        family: One of :data:`FAMILIES`.
        rank: 2 (2.5D) or 3 (3D).
        variant: One of :data:`VARIANTS`.

    Returns:
        Seven :class:`StageConfig`, Layer1 to Layer7.

    Raises:
        ModelBuildError: Unknown family, rank, variant, or DSTS in 2D; the message names the argument.
    """
    _check(family, FAMILIES, "family")
    _check(rank, RANKS, "rank")
    _check(variant, VARIANTS, "variant")
    if family == "shufflenetv2" and rank == 3:
        widths, repeats = _SHUFFLE3D_WIDTHS[variant], _SHUFFLE3D_REPEATS[variant]
        expand, se, acts = (2,) * 7, (0.25,) * 7, ("relu",) * 7
    else:
        if (family, rank) not in _TABLES:
            raise ModelBuildError(f"family {family!r} has no {rank}D configuration", path="family")
        widths, expand, se, acts, table = _TABLES[(family, rank)]
        repeats = table[variant]
    return tuple(
        StageConfig(repeats[i], _KERNELS[i], _STRIDES[rank][i], expand[i], widths[i], widths[i + 1], se[i], acts[i])
        for i in range(7))


def _bn(x, name):
    return common.batch_norm(momentum=common.BN_MOMENTUM, epsilon=common.BN_EPSILON, name=name)(x)


def _upsample(x, factors, rank, name):
    if all(f == 1 for f in factors):
        return x
    if rank == 2:
        return keras.layers.UpSampling2D(factors, interpolation="bilinear", name=name)(x)
    return keras.layers.UpSampling3D(factors, name=name)(x)


def _crop_depth(x, depth, name):
    extra = int(x.shape[1]) - depth
    if extra <= 0:
        return x
    return keras.layers.Cropping3D(((extra // 2, extra - extra // 2), (0, 0), (0, 0)), name=name)(x)


@keras.saving.register_keras_serializable(package="tfmedseg")
class EfficientSegmenter(keras.Model):
    """Stem / encoder / head / decoder / output segmentation network (thesis Sec. 3.1.4).

    Args:
        family: Encoder block family, one of :data:`FAMILIES` (``"dsts"`` is 3D only).
        rank: 2 for 2.5D (slices as channels), 3 for 3D.
        variant: Appendix A configuration, one of :data:`VARIANTS`.
        input_shape: ``(H, W, slices)`` in 2D (default ``(256, 256, 9)``), ``(slices, H, W, 1)``
            in 3D (default ``(8, 256, 256, 1)``). ``H`` and ``W`` must be multiples of the total
            stride (2D 64, 3D 128); 2D slices odd; 3D slices a multiple of 4 (output: the middle
            ``slices // 2``).
        classes: Softmax classes (default 2: background, target).
        head_filters: Head width; ``None``: the calibrated default of the network.
        decoder_filters: Four decoder widths, deep to shallow; ``None``: the calibrated default.
        depthwise3d_implementation: ``"grouped"`` or ``"unrolled"`` (TFLite), see
            :class:`tfmedseg.models.blocks.separable3d.DepthwiseConv3D`.
        name: Model name; default ``f"{family}_{rank}d_{variant}"``.
        **kwargs: Passed to ``keras.Model`` (e.g. ``trainable``).

    Inputs: ``image`` float32 in [0, 1]. Output: ``probabilities`` float32, sums to 1 over the
    last axis.

    Raises:
        ModelBuildError: Unknown family/variant/rank or an input shape that does not fit; the
            message names the argument.
    """

    def __init__(self, family: str = "mobilenetv2", rank: int = 2, variant: str = "default",
                 input_shape: Sequence[int] | None = None, classes: int = 2,
                 head_filters: int | None = None, head_kernel_size: int | None = None,
                 decoder_filters: Sequence[int] | None = None, depthwise3d_implementation: str = "grouped", name: str | None = None, **kwargs):
        stages = stage_configs(family, rank, variant)
        _check(depthwise3d_implementation, DEPTHWISE3D_IMPLEMENTATIONS, "depthwise3d_implementation")
        input_shape = tuple(int(d) for d in (input_shape or _DEFAULT_INPUT[rank]))
        out_depth = self._check_input(input_shape, rank)
        if not isinstance(classes, int) or classes < 1:
            raise ModelBuildError(f"must be a positive int, got {classes!r}", path="classes")
        calibrated = _CALIBRATION[(family, rank)]
        head = int(head_filters if head_filters is not None else calibrated[0])
        head_kernel = int(head_kernel_size if head_kernel_size is not None else calibrated[1])
        decoder = tuple(int(f) for f in (decoder_filters if decoder_filters is not None else calibrated[2]))
        if head_kernel not in (1, 3):
            raise ModelBuildError(f"must be 1 or 3, got {head_kernel}", path="head_kernel_size")
        if len(decoder) != 4 or min(decoder) < 1 or head < 1:
            raise ModelBuildError(f"need a positive head width and 4 positive decoder widths, got {head}, "
                                  f"{decoder}", path="decoder_filters")
        act = _MAIN_ACTIVATION[family]
        impl = depthwise3d_implementation

        image = keras.Input(input_shape, name="image")
        # Stem: shortcut to the output block, then patchify to 1/4 (2D) or 1/8 in-plane (3D).
        if rank == 2:
            shortcut = image
            x = common.apply_depthwise_conv(image, _STEM_STRIDES[2], _STEM_STRIDES[2], name="stem_patch")
        else:
            shortcut = _crop_depth(image, out_depth, name="stem_shortcut_crop")
            x = common.apply_conv(image, input_shape[-1] * 4, _STEM_STRIDES[3], _STEM_STRIDES[3], name="stem_patch")
        x = common.apply_conv_bn_act(x, stages[0].filters_in, 1, activation=act, name="stem")

        skips = []
        for i, stage in enumerate(stages):
            if i in (1, 2, 3, 5):  # the map before a downsampling stage is a skip (L1, L2, L3, L5 out)
                skips.append(x)
            for r in range(stage.repeats):
                x = self._block(family, x, stage, r, f"encoder_l{i + 1}_b{r + 1}", impl)

        x = common.apply_conv_bn_act(x, head, head_kernel, activation=act, name="head")
        for level, (skip, width) in enumerate(zip(reversed(skips), decoder)):
            name = f"decoder_{level + 1}"
            if rank == 3:
                skip = _crop_depth(skip, out_depth, name=f"{name}_skip_crop")
            factors = tuple(int(s) // int(c) for s, c in zip(skip.shape[1:-1], x.shape[1:-1]))
            x = _upsample(x, factors, rank, name=f"{name}_up")
            x = keras.layers.Concatenate(name=f"{name}_concat")([x, skip])
            x = common.apply_conv_bn_act(x, width, 1, activation=act, name=f"{name}_pw")
            x = common.apply_depthwise_conv(x, 3, 1, name=f"{name}_dwconv", implementation=impl)
            x = _bn(x, f"{name}_dw_bn")
            x = common.apply_activation(x, act, name=f"{name}_dw_act")

        x = common.apply_conv(x, classes, 1, use_bias=True, name="output_logits")
        factors = tuple(int(s) // int(c) for s, c in zip(shortcut.shape[1:-1], x.shape[1:-1]))
        x = _upsample(x, factors, rank, name="output_up")
        x = keras.layers.Concatenate(name="output_concat")([x, shortcut])
        x = common.apply_conv(x, classes, 1, use_bias=True, name="output_conv")
        probabilities = keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(x)  # float32 under a mixed policy

        super().__init__(inputs=image, outputs=probabilities, name=name or f"{family}_{rank}d_{variant}", **kwargs)
        self.family = family
        self.rank = rank
        self.variant = variant
        self.image_shape = input_shape
        self.classes = classes
        self.head_filters = head
        self.head_kernel_size = head_kernel
        self.decoder_filters = decoder
        self.depthwise3d_implementation = impl
        self.output_slices = out_depth

    @staticmethod
    def _check_input(shape, rank):
        """Validate ``input_shape``; returns the output slice count (1 in 2D)."""
        if rank == 2:
            if len(shape) != 3:
                raise ModelBuildError(f"2D models take (H, W, slices), got {shape}", path="input_shape")
            h, w, slices = shape
            stride = 64
            if slices < 1 or slices % 2 == 0:
                raise ModelBuildError(f"the slice count must be odd (the output is the middle slice), got "
                                      f"{slices}", path="input_shape")
            out = 1
        else:
            if len(shape) != 4 or shape[-1] != 1:
                raise ModelBuildError(f"3D models take (slices, H, W, 1), got {shape}", path="input_shape")
            slices, h, w, _ = shape
            stride = 128
            if slices < 4 or slices % 4:
                raise ModelBuildError(f"the slice count must be a positive multiple of 4 (two depth "
                                      f"downsamplings; output = middle slices // 2), got {slices}",
                                      path="input_shape")
            out = slices // 2
        if h % stride or w % stride or h < stride or w < stride:
            raise ModelBuildError(f"H and W must be positive multiples of {stride} (the total stride), got "
                                  f"{h} x {w}", path="input_shape")
        return out

    @staticmethod
    def _block(family, x, stage, r, name, impl):
        strides = stage.strides if r == 0 else 1
        if family == "mobilenetv2":
            return apply_mbconv(x, stage.filters_out, stage.kernel_size, strides, stage.expand_ratio,
                                stage.se_ratio, stage.activation, name=name, implementation=impl)
        if family == "mobilenetv3":
            return apply_mobilenetv3_block(x, stage.filters_out, stage.kernel_size, strides, stage.expand_ratio,
                                           stage.se_ratio, stage.activation, name=name, implementation=impl)
        if family == "shufflenetv2":
            return apply_shufflenet_v2_unit(x, stage.filters_out, stage.kernel_size, strides, stage.se_ratio,
                                            stage.expand_ratio, stage.activation, name=name, implementation=impl)
        return apply_dsts_block(x, stage.filters_out, stage.kernel_size, strides, stage.expand_ratio,
                                stage.se_ratio, stage.activation, name=name, implementation=impl)

    def get_config(self):
        return {
            "family": self.family,
            "rank": self.rank,
            "variant": self.variant,
            "input_shape": list(self.image_shape),
            "classes": self.classes,
            "head_filters": self.head_filters,
            "head_kernel_size": self.head_kernel_size,
            "decoder_filters": list(self.decoder_filters),
            "depthwise3d_implementation": self.depthwise3d_implementation,
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def _builder(family, rank):
    def build(variant: str = "default", input_shape: Sequence[int] | None = None, classes: int = 2,
              **kwargs) -> EfficientSegmenter:
        return EfficientSegmenter(family=family, rank=rank, variant=variant, input_shape=input_shape,
                                  classes=classes, **kwargs)

    build.__name__ = f"{family}_{rank}d"
    build.__doc__ = (f"Build the {family} {rank}D network of seed 002; see :class:`EfficientSegmenter` "
                     "for the arguments (``variant``, ``input_shape``, ``classes``, ``head_filters``, "
                     "``decoder_filters``, ``depthwise3d_implementation``).")
    return register(build.__name__)(build)


mobilenetv2_2d = _builder("mobilenetv2", 2)
mobilenetv3_2d = _builder("mobilenetv3", 2)
shufflenetv2_2d = _builder("shufflenetv2", 2)
mobilenetv2_3d = _builder("mobilenetv2", 3)
mobilenetv3_3d = _builder("mobilenetv3", 3)
shufflenetv2_3d = _builder("shufflenetv2", 3)
dsts_3d = _builder("dsts", 3)
