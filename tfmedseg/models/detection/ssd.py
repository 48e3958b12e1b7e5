"""SSD512 with a VGG-16 backbone: the chest detector of MaligNet's first stage (seed 001, Table 10).

SSD (Liu et al., 2016, "SSD: Single Shot MultiBox Detector") as in the Keras reference
``ssd_keras`` ``ssd_512``: VGG-16 ``conv4_3`` (L2-normalised, scale 20) and ``fc7`` (dilated
``fc6`` + 1x1 ``fc7`` replacing the classifier) plus five extra stride-2 blocks give 7 predictor
maps (64, 32, 16, 8, 4, 2, 1 cells at 512 px); every map has a 3x3 class head and a 3x3 box head.
Anchors: Table 10 scales ``[0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05]``, steps
``[8, ..., 512]``, offsets 0.5, ``ssd_keras`` aspect ratios and ``two_boxes_for_ar1``; variances
``(0.1, 0.1, 0.2, 0.2)``; matching IoU 0.5 positive / 0.3 negative (in between: ignored), plus
each object's best anchor. Loss: softmax CE with 3:1 hard-negative mining + smooth-L1 on
positives, normalised by the positives; Adam 1e-3 with L2 5e-4 on conv kernels; NMS IoU 0.45.

:class:`SSD` is one model with two faces sharing the weights: ``model(images)`` returns padded
detections (what is exported and served) and ``fit`` trains on
``(images, {"boxes": [B, N, 4], "classes": [B, N]})`` with a custom ``train_step`` that encodes
targets in the graph (works under ``MirroredStrategy``).

Example:
    >>> cfg = SSDConfig.tiny()
    >>> model = build_ssd(cfg)
    >>> out = model(np.zeros((1, 64, 64, 1), np.float32))
    >>> sorted(out)
    ['boxes', 'classes', 'num_detections', 'scores']
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from tfmedseg.errors import ConfigError, InvalidInputError, ModelBuildError
from tfmedseg.models.backbones._weights import resolve_application_weights
from tfmedseg.models.backbones.vgg import build_vgg16_backbone
from tfmedseg.models.detection import losses as det_losses
from tfmedseg.models.detection.anchors import num_anchors_per_location, ssd_anchors
from tfmedseg.models.detection.box_coder import clip_boxes, decode_boxes, encode_boxes
from tfmedseg.models.detection.matching import assign_targets
from tfmedseg.models.detection.nms import batched_nms
from tfmedseg.models.detection.config import SSDConfig
from tfmedseg.models.registry import register

# Plain tensor code without data-dependent Python control flow: skipping AutoGraph's source
# conversion cuts the first (tracing) step of fit/export by about half.
_no_autograph = tf.autograph.experimental.do_not_convert

VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"

__all__ = ["SSDConfig", "L2Normalization", "SSD", "build_ssd"]

@keras.saving.register_keras_serializable(package="tfmedseg")
class L2Normalization(keras.layers.Layer):
    """Channel-wise L2 normalisation with a learned per-channel scale (SSD ``conv4_3_norm``).

    Args:
        scale: Initial value of every channel's scale (SSD: 20).

    Call args:
        x: ``[B, H, W, C]``. Returns ``x / ||x||_2 * gamma`` of the same shape.
    """

    def __init__(self, scale: float = 20.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.scale)
        )

    def call(self, x):
        return keras.ops.normalize(x, axis=-1, order=2) * self.gamma

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _build_network(backbone: keras.Model, config: SSDConfig, regularizer) -> keras.Model:
    """Backbone + fc6/fc7 + extra blocks + heads -> ``{"class_logits", "box_deltas"}``."""
    feats = backbone.output
    if not isinstance(feats, dict) or "C3" not in feats or "C4" not in feats:
        raise ModelBuildError("the SSD backbone must return a dict with 'C3' (stride 8) and 'C4' (stride 16)", path="backbone")
    conv = lambda f, k, name, **kw: keras.layers.Conv2D(  # noqa: E731
        f, k, padding="same", kernel_regularizer=regularizer, name=name, **kw
    )
    sources = [L2Normalization(config.l2_norm_scale, name="conv4_3_norm")(feats["C3"])]
    x = keras.layers.MaxPooling2D(3, 1, padding="same", name="pool5")(feats["C4"])
    x = conv(config.fc_filters, 3, "fc6", dilation_rate=6, activation="relu")(x)
    x = conv(config.fc_filters, 1, "fc7", activation="relu")(x)
    sources.append(x)
    for i, (f1, f2) in enumerate(config.extra_filters, start=6):
        x = conv(f1, 1, f"conv{i}_1", activation="relu")(x)
        x = conv(f2, 3, f"conv{i}_2", strides=2, activation="relu")(x)
        sources.append(x)
    n_cls = config.num_classes + 1
    logits, deltas = [], []
    for i, (src, ratios) in enumerate(zip(sources, config.aspect_ratios)):
        k = num_anchors_per_location(ratios, config.two_boxes_for_ar1)
        logits.append(keras.layers.Reshape((-1, n_cls), name=f"cls_reshape_{i}")(conv(k * n_cls, 3, f"cls_head_{i}")(src)))
        deltas.append(keras.layers.Reshape((-1, 4), name=f"box_reshape_{i}")(conv(k * 4, 3, f"box_head_{i}")(src)))
    outputs = {
        "class_logits": keras.layers.Concatenate(axis=1, name="class_logits")(logits),
        "box_deltas": keras.layers.Concatenate(axis=1, name="box_deltas")(deltas),
        "level_sizes": sources,
    }
    return outputs


@keras.saving.register_keras_serializable(package="tfmedseg")
class SSD(keras.Model):
    """SSD detector on a built backbone; ``call`` returns detections, ``fit`` trains.

    Args:
        backbone: Functional model ``[B, S, S, C]`` -> dict with ``"C3"`` (stride 8) and ``"C4"``
            (stride 16), e.g. :func:`tfmedseg.models.backbones.vgg.build_vgg16_backbone`.
        config: :class:`SSDConfig` (or its dict); its ``image_size`` must match the backbone input.

    Call args:
        images: ``float32 [B, S, S, C]``.
        training: Batch-norm mode (VGG has none; kept for API symmetry).

    Returns:
        Dict ``boxes [B, K, 4]`` (pixels ``y0, x0, y1, x1``, clipped to the image),
        ``scores [B, K]``, ``classes int32 [B, K]`` (1-based; 0 = padding) and
        ``num_detections int32 [B]``, ``K = config.max_detections``.
    """

    def __init__(self, backbone: keras.Model, config: SSDConfig | dict | None = None, **kwargs):
        super().__init__(**kwargs)
        config = SSDConfig() if config is None else config
        self.config = _as_ssd_config(config)
        cfg = self.config
        shape = tuple(backbone.input.shape[1:])
        if shape != (cfg.image_size, cfg.image_size, cfg.input_channels):
            raise ModelBuildError(
                f"backbone input {shape} does not match config ({cfg.image_size}, {cfg.image_size}, "
                f"{cfg.input_channels})",
                path="backbone",
            )
        self.backbone = backbone
        regularizer = keras.regularizers.L2(cfg.weight_decay) if cfg.weight_decay > 0 else None
        outs = _build_network(backbone, cfg, regularizer)
        level_sizes = [tuple(int(d) for d in s.shape[1:3]) for s in outs.pop("level_sizes")]
        self.network = keras.Model(backbone.input, outs, name="ssd_network")
        self.level_sizes = level_sizes
        self.anchors = ssd_anchors(
            cfg.image_size, level_sizes, cfg.scales, cfg.steps, cfg.offsets, cfg.aspect_ratios, cfg.two_boxes_for_ar1
        )
        n_pred = int(self.network.output["box_deltas"].shape[1])
        if n_pred != len(self.anchors):
            raise ModelBuildError(f"{n_pred} head outputs but {len(self.anchors)} anchors", path="config")
        self.input_spec_shape = (cfg.image_size, cfg.image_size, cfg.input_channels)
        self._trackers = {k: keras.metrics.Mean(name=k) for k in ("loss", "class_loss", "box_loss")}
        self.built = True

    # -- inference -------------------------------------------------------------------------
    def _check_images(self, images):
        shape = tuple(images.shape[1:])
        if len(shape) != 3 or any(s is not None and s != e for s, e in zip(shape, self.input_spec_shape)):
            raise InvalidInputError(f"expected images [B, {', '.join(map(str, self.input_spec_shape))}], got {tuple(images.shape)}", path="images")

    @_no_autograph
    def call(self, images, training=False):
        images = tf.convert_to_tensor(images, tf.float32)
        self._check_images(images)
        raw = self.network(images, training=training)
        return self.detect(raw["class_logits"], raw["box_deltas"])

    @_no_autograph
    def detect(self, class_logits, box_deltas) -> dict[str, tf.Tensor]:
        """Decode head outputs ``[B, A, C + 1]`` / ``[B, A, 4]`` and run per-class NMS."""
        cfg = self.config
        probs = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
        boxes = decode_boxes(box_deltas, self.anchors[None], cfg.variances)
        boxes = clip_boxes(boxes, (cfg.image_size, cfg.image_size))
        if 0 < cfg.pre_nms_top_k < len(self.anchors):
            # per class its best k anchors: boxes [B, k, C, 4] / scores [B, k, C], column c = class c's candidates
            top, idx = tf.math.top_k(tf.transpose(probs, [0, 2, 1]), k=cfg.pre_nms_top_k)  # [B, C, k]
            boxes = tf.transpose(tf.gather(boxes, idx, batch_dims=1), [0, 2, 1, 3])
            probs = tf.transpose(top, [0, 2, 1])
        return batched_nms(boxes, probs, cfg.max_detections, cfg.nms_iou, cfg.score_threshold)

    # -- training --------------------------------------------------------------------------
    @_no_autograph
    def anchor_targets(self, gt_boxes, gt_classes) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-anchor training targets of a padded ground-truth batch.

        Args:
            gt_boxes: ``[B, N, 4]`` padded pixel boxes.
            gt_classes: ``[B, N]`` classes ``1..C``; ``<= 0`` = padding.

        Returns:
            ``(labels int32 [B, A], box_targets float32 [B, A, 4])``: labels are the matched class
            (``>= 1``), ``0`` background (best IoU < ``negative_iou``) or ``-1`` ignored; the
            targets are encoded deltas, meaningful where ``labels > 0``.
        """
        cfg = self.config
        match = assign_targets(self.anchors, gt_boxes, gt_classes, cfg.positive_iou, cfg.negative_iou, True)
        labels = tf.where(match["labels"] == 1, match["matched_classes"], match["labels"])
        return labels, encode_boxes(match["matched_boxes"], self.anchors[None], cfg.variances)

    @_no_autograph
    def compute_losses(self, images, gt_boxes, gt_classes, training: bool = True) -> dict[str, tf.Tensor]:
        """Per-replica losses ``{"class_loss", "box_loss", "total"}`` (total adds L2 decay).

        Args:
            images: ``[B, S, S, C]``.
            gt_boxes: ``[B, N, 4]`` padded pixel boxes.
            gt_classes: ``[B, N]`` classes ``1..C``; ``<= 0`` = padding.
        """
        cfg = self.config
        raw = self.network(images, training=training)
        labels, targets = self.anchor_targets(gt_boxes, gt_classes)
        cls_loss = det_losses.ssd_hard_negative_loss(labels, raw["class_logits"], cfg.neg_pos_ratio)
        box_loss = det_losses.smooth_l1(targets, raw["box_deltas"], tf.cast(labels > 0, tf.float32))
        total = cls_loss + box_loss
        if self.losses:
            total = total + tf.add_n(self.losses)
        return {"class_loss": cls_loss, "box_loss": box_loss, "total": total}

    @_no_autograph
    def train_step(self, data):
        images, gt = _unpack(data)
        losses = det_losses.apply_loss_gradients(self, lambda: self.compute_losses(images, gt["boxes"], gt["classes"], training=True))
        return det_losses.update_loss_trackers(self._trackers, losses)

    @_no_autograph
    def test_step(self, data):
        images, gt = _unpack(data)
        losses = self.compute_losses(images, gt["boxes"], gt["classes"], training=False)
        return det_losses.update_loss_trackers(self._trackers, losses)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "config": dataclasses.asdict(self.config),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone=backbone, **config)


def _as_ssd_config(config: SSDConfig | dict) -> SSDConfig:
    if isinstance(config, SSDConfig):
        return config
    fields = dict(config)
    for key in ("scales", "steps", "offsets", "variances", "backbone_filters"):
        if key in fields:
            fields[key] = tuple(fields[key])
    for key in ("aspect_ratios", "extra_filters"):
        if key in fields:
            fields[key] = tuple(tuple(v) for v in fields[key])
    return SSDConfig(**fields)


def _unpack(data):
    """``(images, {"boxes", "classes"})`` or ``{"images", "boxes", "classes"}`` -> (images, gt)."""
    if isinstance(data, dict):
        return data["images"], data
    images, gt = data[0], data[1]
    if not isinstance(gt, dict) or "boxes" not in gt or "classes" not in gt:
        raise InvalidInputError("training targets must be a dict with 'boxes' and 'classes'", path="y")
    return images, gt


@register("ssd512_vgg16")
def build_ssd(config: SSDConfig | dict | None = None, weights: str | None = None, **overrides: Any) -> SSD:
    """SSD512-VGG16 from a config (Table 10 defaults); ``overrides`` replace config fields.

    Args:
        config: :class:`SSDConfig` or dict; None = defaults.
        weights: A local ``keras.applications`` VGG16 notop weights file; None: use
            ``config.backbone_weights``.
        **overrides: Config fields (``image_size=320``, ...).

    Returns:
        An uncompiled :class:`SSD`; compile with an optimizer (Table 10: ``keras.optimizers.Adam(1e-3)``;
        the experiments build it from a ``TrainConfig`` through :class:`tfmedseg.training.Trainer`).

    Raises:
        ConfigError: Unknown field or inconsistent anchor lists.
    """
    cfg = SSDConfig() if config is None else _as_ssd_config(config)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SSDConfig)}
    if unknown:
        raise ConfigError(f"unknown SSD config field(s) {sorted(unknown)}", path=sorted(unknown)[0])
    cfg = dataclasses.replace(cfg, **overrides)
    if weights is None:
        weights = resolve_application_weights(cfg.backbone_weights, VGG16_NOTOP_FILE, "ssd.backbone_weights")
    reg = keras.regularizers.L2(cfg.weight_decay) if cfg.weight_decay > 0 else None
    backbone = build_vgg16_backbone(
        (cfg.image_size, cfg.image_size, cfg.input_channels), cfg.backbone_filters, weights=weights, kernel_regularizer=reg
    )
    return SSD(backbone, cfg, name="ssd")
