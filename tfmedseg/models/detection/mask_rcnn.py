"""Mask R-CNN with a ResNet-50 FPN in Keras 3 (He et al., 2017), seed 001's baseline (Table 11).

Composition (Model Garden ``MaskRCNNModel`` style; the model receives built parts):
``backbone`` (images -> ``{"C2".."C5"}``) -> ``decoder`` (-> ``{"P2".."P6"}``, swappable: FPN now,
ladder FPN later) -> :class:`~tfmedseg.models.detection.rpn.RPNHead` on ``P2..P6`` -> proposals
(top 6000, NMS 0.7) -> ROIAlign 7x7 on ``P2..P5`` -> ``box_head`` (swappable: set
``uses_context = True`` to receive ``C5``, the seam for the global-feature classifier) ->
detection layer (min confidence 0.7, per-class NMS 0.3, 100 detections) -> ROIAlign 14x14 ->
``mask_head`` (14x14 masks, seed §3e).

One :class:`MaskRCNN` object holds the weights for both uses:

* ``model(images)`` is the inference model: ``boxes [B, D, 4]`` (pixels ``y0, x0, y1, x1``),
  ``classes int32 [B, D]`` (1..C, 0 = padding), ``scores [B, D]``, ``num_detections [B]``,
  ``mask_probs [B, D, S, S]`` (the predicted class's box-relative mask; zeros on padding rows: the mask
  branch runs on the valid detections only) and, with
  ``full_size_masks=True`` (default), ``masks uint8 [B, D, H, W]`` (pasted, thresholded at 0.5).
  :func:`~tfmedseg.models.detection.roi.paste_masks` pastes ``mask_probs`` on demand.
* ``fit`` trains on ``{"images", "boxes", "classes", "masks"}`` (padded ground truth; ``masks`` are
  ``[B, N, M, M]`` box-relative "mini" masks from :func:`prepare_ground_truth`) with the five
  losses of eq. 33 (RPN class/box, head class/box, mask BCE), each weighted 1, plus L2 1e-4.

Example:
    >>> cfg = MaskRCNNConfig.tiny()
    >>> model = build_mask_rcnn(cfg)
    >>> out = model(np.zeros((1, 64, 64, 1), np.float32))
    >>> tuple(out["masks"].shape)
    (1, 8, 64, 64)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfmedseg.errors import ConfigError, InvalidInputError, ModelBuildError
from tfmedseg.models.backbones.resnet import build_resnet_backbone
from tfmedseg.models.detection import losses as det_losses
from tfmedseg.models.detection.anchors import multilevel_anchors
from tfmedseg.models.detection.box_coder import box_area, clip_boxes, decode_boxes
from tfmedseg.models.detection.fpn import build_fpn
from tfmedseg.models.detection.heads import BoxClassHead, MaskHead
from tfmedseg.models.detection.matching import pad_ground_truth
from tfmedseg.models.detection.nms import batched_nms
from tfmedseg.models.detection.roi import MultilevelROIAlign, make_mini_masks, paste_masks
from tfmedseg.models.detection.rpn import RPNHead, generate_proposals, rpn_targets
from tfmedseg.models.detection.targets import detection_targets
from tfmedseg.models.detection.config import (
    LOSS_NAMES,
    UNSUPERVISED_LOSS,
    MaskRCNNConfig,
)
from tfmedseg.models.detection.config import as_mask_rcnn_config as _as_config
from tfmedseg.models.registry import register

# Plain tensor code without data-dependent Python control flow: skipping AutoGraph's source
# conversion cuts the first (tracing) step of fit/export by about half.
_no_autograph = tf.autograph.experimental.do_not_convert

__all__ = ["LOSS_NAMES", "MaskRCNNConfig", "MaskRCNN", "build_mask_rcnn_parts", "build_mask_rcnn",
           "prepare_ground_truth"]

VIEW_COUNTS = ("labeled_views", "unlabeled_views")


@keras.saving.register_keras_serializable(package="tfmedseg")
class MaskRCNN(keras.Model):
    """Mask R-CNN from built parts; ``call`` = inference, ``fit`` = training (shared weights).

    Args:
        backbone: ``[B, S, S, C]`` -> ``{"C2".."C5"}`` functional model.
        decoder: ``{"C2".."C5"}`` -> ``{"P2".."P6"}`` model (FPN or a replacement).
        rpn_head: :class:`RPNHead` (or same contract).
        box_head: :class:`BoxClassHead` (or same contract; ``uses_context`` -> gets ``C5``).
        mask_head: :class:`MaskHead` (or same contract).
        config: :class:`MaskRCNNConfig` or dict.

    Call args:
        images: ``float32 [B, S, S, C]``.

    Returns:
        Detection dict (see the module docstring).
    """

    def __init__(self, backbone, decoder, rpn_head, box_head, mask_head, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = cfg = _as_config(MaskRCNNConfig() if config is None else config)
        shape = tuple(backbone.input.shape[1:])
        if shape != (cfg.image_size, cfg.image_size, cfg.input_channels):
            raise ModelBuildError(f"backbone input {shape} does not match the config image size/channels", path="backbone")
        self.backbone, self.decoder = backbone, decoder
        self.rpn_head, self.box_head, self.mask_head = rpn_head, box_head, mask_head
        self.roi_align = MultilevelROIAlign(cfg.pool_size, 2, 5, cfg.roi_sampling_ratio, name="roi_align_classifier")
        self.mask_roi_align = MultilevelROIAlign(cfg.mask_pool_size, 2, 5, cfg.roi_sampling_ratio, name="roi_align_mask")
        self.anchors = multilevel_anchors(
            cfg.image_size, (4, 8, 16, 32, 64), cfg.rpn_anchor_scales, cfg.rpn_anchor_ratios, cfg.rpn_anchor_stride, cfg.anchor_offset
        )
        self.input_spec_shape = (cfg.image_size, cfg.image_size, cfg.input_channels)
        self._trackers = {k: keras.metrics.Mean(name=k) for k in ("loss",) + self.loss_names}
        # views per epoch (Sum metrics reset each epoch): shows how many unlabeled views training consumed
        self._trackers.update({k: keras.metrics.Sum(name=k) for k in VIEW_COUNTS})
        self._build_heads()
        self.built = True

    @property
    def has_unsupervised_loss(self) -> bool:
        """True when the decoder adds an unsupervised cost (ladder FPN, ``ladder()`` method)."""
        return bool(getattr(self.decoder, "has_unsupervised_loss", False))

    @property
    def loss_names(self) -> tuple[str, ...]:
        """:data:`LOSS_NAMES`, plus ``denoising_loss`` with a ladder decoder."""
        return LOSS_NAMES + ((UNSUPERVISED_LOSS,) if self.has_unsupervised_loss else ())

    def _build_heads(self):
        """Create the head variables eagerly (one tiny forward pass per head)."""
        zeros = {k: tf.zeros([1, *v.shape[1:]]) for k, v in self.backbone.output.items()}
        pyramid = self.decoder(zeros)
        feats = [tf.zeros([1, *pyramid[f"P{l}"].shape[1:]]) for l in range(2, 7)]
        logits, _ = self.rpn_head(feats)
        if logits.shape[1] != len(self.anchors):
            raise ModelBuildError(f"RPN predicts {logits.shape[1]} anchors, config gives {len(self.anchors)}", path="rpn_head")
        c = pyramid["P2"].shape[-1]
        roi = tf.zeros([1, 1, self.config.pool_size, self.config.pool_size, c])
        if getattr(self.box_head, "uses_context", False):
            self.box_head(roi, context=tf.zeros([1, *self.backbone.output["C5"].shape[1:]]))
        else:
            self.box_head(roi)
        self.mask_head(tf.zeros([1, 1, self.config.mask_pool_size, self.config.mask_pool_size, c]))

    # -- shared pieces -----------------------------------------------------------------------
    def _features(self, images, training, with_unsupervised: bool = False):
        images = tf.convert_to_tensor(images, tf.float32)
        got = tuple(images.shape[1:])
        if len(got) != 3 or any(s is not None and s != e for s, e in zip(got, self.input_spec_shape)):
            raise InvalidInputError(f"expected images [B, {', '.join(map(str, self.input_spec_shape))}], got {tuple(images.shape)}", path="images")
        feats = self.backbone(images, training=training)
        if with_unsupervised and self.has_unsupervised_loss:
            out = self.decoder.ladder(feats, training=training)
            pyramid, cost = out["pyramid"], out["denoising_cost"]
        else:
            pyramid, cost = self.decoder(feats, training=training), None
        levels = [pyramid[f"P{l}"] for l in range(2, 7)]
        return (feats, levels, cost) if with_unsupervised else (feats, levels)

    def _classify(self, feats, rois_feats, training):
        if getattr(self.box_head, "uses_context", False):
            return self.box_head(rois_feats, context=feats["C5"], training=training)
        return self.box_head(rois_feats, training=training)

    def _proposals(self, rpn_logits, rpn_deltas, count):
        cfg = self.config
        with tf.name_scope("proposals"):
            return generate_proposals(
                rpn_logits, rpn_deltas, self.anchors, (cfg.image_size,) * 2, cfg.pre_nms_limit, count, cfg.rpn_nms_threshold,
                cfg.rpn_bbox_std,
            )

    # -- inference ---------------------------------------------------------------------------
    @_no_autograph
    def call(self, images, training=False):
        cfg = self.config
        feats, pyramid = self._features(images, training)
        rpn_logits, rpn_deltas = self.rpn_head(pyramid)
        proposals = self._proposals(rpn_logits, rpn_deltas, cfg.post_nms_rois_inference)
        logits, deltas = self._classify(feats, self.roi_align(pyramid[:4], proposals), training)
        det = self.detect(proposals, logits, deltas)
        # the mask branch runs on the first k = max(num_detections) rows only (torchvision: on the
        # detections); padding rows get zero masks
        d = cfg.detection_max_instances
        with tf.name_scope("valid_detections"):
            k = tf.maximum(tf.reduce_max(det["num_detections"]), 1)
            valid = tf.sequence_mask(det["num_detections"], k)
            boxes, classes = det["boxes"][:, :k], det["classes"][:, :k]
        masks = self.mask_head(self.mask_roi_align(pyramid[:4], boxes), training=training)  # [B, k, S, S, K]
        masks = tf.gather(tf.transpose(masks, [0, 1, 4, 2, 3]), classes, axis=2, batch_dims=2)
        masks = tf.where(valid[..., None, None], masks, 0.0)
        s = masks.shape[-1]
        det["mask_probs"] = tf.ensure_shape(tf.pad(masks, [[0, 0], [0, d - k], [0, 0], [0, 0]]), [None, d, s, s])
        if cfg.full_size_masks:
            with tf.name_scope("paste_masks"):
                full = paste_masks(masks, boxes, (cfg.image_size,) * 2) >= 0.5
                full = tf.pad(tf.cast(full & valid[..., None, None], tf.uint8), [[0, 0], [0, d - k], [0, 0], [0, 0]])
                det["masks"] = tf.ensure_shape(full, [None, d, cfg.image_size, cfg.image_size])
        return det

    @_no_autograph
    def detect(self, rois, class_logits, deltas) -> dict[str, tf.Tensor]:
        """Detection layer: per ROI its top class (dropping background), class-specific box
        refinement, score >= min confidence, per-class NMS, top ``detection_max_instances``.

        Args:
            rois: ``[B, R, 4]`` proposals (zero rows ignored).
            class_logits: ``[B, R, K]``; deltas: ``[B, R, K, 4]``.
        """
        cfg = self.config
        probs = tf.nn.softmax(class_logits, axis=-1)
        top = tf.one_hot(tf.argmax(probs, axis=-1), cfg.num_classes + 1)
        scores = (probs * top)[..., 1:] * tf.cast(box_area(rois) > 0, tf.float32)[..., None]
        boxes = decode_boxes(deltas[:, :, 1:, :], rois[:, :, None, :], cfg.bbox_std)
        boxes = clip_boxes(boxes, (cfg.image_size,) * 2)
        return batched_nms(boxes, scores, cfg.detection_max_instances, cfg.detection_nms_threshold, cfg.detection_min_confidence)

    # -- training ----------------------------------------------------------------------------
    @_no_autograph
    def compute_losses(self, images, gt_boxes, gt_classes, gt_masks, training: bool = True, labeled=None) -> dict[str, tf.Tensor]:
        """The five Mask R-CNN losses of one replica's batch plus ``total`` (weighted sum + L2).

        With a ladder decoder, also ``denoising_loss`` (eq. 30, on every image) and the RPN/heads
        read the noisy pyramid when ``training``. The supervised losses are masked per sample to
        the labeled images (eq. 34-35): a batch of unlabeled images only gives 0 for all five.

        Args:
            images: ``[B, S, S, C]``.
            gt_boxes: ``[B, N, 4]`` pixels; gt_classes: ``[B, N]`` (``<= 0`` padding);
            gt_masks: ``[B, N, M, M]`` box-relative masks in ``[0, 1]``.
            labeled: ``bool [B]`` (None: all labeled).
        """
        cfg = self.config
        feats, pyramid, unsup = self._features(images, training, with_unsupervised=True)
        if labeled is None:
            lab = tf.ones([tf.shape(gt_boxes)[0]], tf.float32)
        else:
            lab = tf.cast(tf.reshape(labeled, [-1]), tf.float32)
        rpn_logits, rpn_deltas = self.rpn_head(pyramid)
        with tf.name_scope("rpn_targets"):
            rpn_t = rpn_targets(
                self.anchors, gt_boxes, gt_classes, cfg.rpn_train_anchors_per_image, cfg.rpn_positive_fraction,
                cfg.rpn_positive_iou, cfg.rpn_negative_iou, cfg.rpn_bbox_std, seed=cfg.seed,
            )
        out = {
            "rpn_class_loss": det_losses.softmax_cross_entropy(rpn_t["labels"], rpn_logits, _masked(rpn_t["labels"] >= 0, lab)),
            "rpn_bbox_loss": det_losses.smooth_l1(rpn_t["deltas"], rpn_deltas, _masked(rpn_t["labels"] == 1, lab)),
        }
        proposals = self._proposals(rpn_logits, rpn_deltas, cfg.post_nms_rois_training)
        with tf.name_scope("detection_targets"):
            t = detection_targets(
                proposals, gt_boxes, gt_classes, gt_masks, cfg.train_rois_per_image, cfg.roi_positive_ratio,
                cfg.roi_positive_iou, self.mask_head_output_size, cfg.bbox_std, seed=cfg.seed + 1,
            )
        logits, deltas = self._classify(feats, self.roi_align(pyramid[:4], t["rois"]), training)
        cls = t["class_targets"]
        positive = _masked(t["positive"], lab)
        out["mrcnn_class_loss"] = det_losses.softmax_cross_entropy(cls, logits, _masked(t["valid"], lab))
        out["mrcnn_bbox_loss"] = det_losses.smooth_l1(t["box_targets"], tf.gather(deltas, cls, axis=2, batch_dims=2), positive)
        out["mrcnn_mask_loss"] = self._mask_loss(pyramid, t["rois"], cls, t["mask_targets"], positive, training)
        if unsup is not None:
            out[UNSUPERVISED_LOSS] = unsup
        total = tf.add_n([cfg.loss_weights.get(k, 1.0) * out[k] for k in self.loss_names])
        if self.losses:
            total = total + tf.add_n(self.losses)
        out["total"] = total
        out["labeled_views"] = tf.reduce_sum(lab)
        out["unlabeled_views"] = tf.cast(tf.size(lab), tf.float32) - out["labeled_views"]
        return out

    def _mask_loss(self, pyramid, rois, classes, mask_targets, positive, training) -> tf.Tensor:
        """Mask BCE over the positive ROIs only: the mask branch (ROIAlign 14x14 + mask head) runs
        on the positives gathered from the whole batch, as in torchvision and the Model Garden
        (the loss only counts positives, so the negatives' masks were wasted work; the mask head's
        batch-norm statistics now come from the positives, the ROIs it sees at inference).

        Args:
            pyramid: ``P2..P6`` maps; rois: ``[B, R, 4]``; classes: ``int32 [B, R]``;
            mask_targets: ``[B, R, S, S]``; positive: ``[B, R]`` weights (0/1, labeled images only).
        """
        with tf.name_scope("positive_rois"):
            r = tf.shape(rois)[1]
            flat_pos = tf.reshape(positive, [-1])
            picked = tf.cast(tf.where(flat_pos > 0)[:, 0], tf.int32)
            # at least one row (a zero-weight one when nothing is positive): batch norm never sees an empty batch
            picked = tf.concat([picked, tf.zeros([1], tf.int32)], 0)[: tf.maximum(tf.size(picked), 1)]
            boxes = tf.gather(tf.reshape(rois, [-1, 4]), picked)
            weights = tf.gather(flat_pos, picked)
            cls = tf.gather(tf.reshape(classes, [-1]), picked)
            s = self.mask_head_output_size
            targets = tf.gather(tf.reshape(mask_targets, [-1, s, s]), picked)
        feats = self.mask_roi_align(pyramid[:4], boxes, picked // r)
        masks = self.mask_head(feats[None], training=training)[0]  # [P, S, S, K]
        masks = tf.gather(tf.transpose(masks, [0, 3, 1, 2]), cls, axis=1, batch_dims=1)
        return det_losses.binary_cross_entropy(targets, masks, weights)

    @property
    def mask_head_output_size(self) -> int:
        """Side of the predicted masks (``mask_pool_size``, doubled with ``mask_upsample``)."""
        return self.config.mask_pool_size * (2 if self.config.mask_upsample else 1)

    @_no_autograph
    def train_step(self, data):
        gt = _unpack(data)
        losses = det_losses.apply_loss_gradients(self, lambda: self.compute_losses(
            gt["images"], gt["boxes"], gt["classes"], gt["masks"], training=True, labeled=gt.get("labeled")))
        return det_losses.update_loss_trackers(self._trackers, losses)

    @_no_autograph
    def test_step(self, data):
        gt = _unpack(data)
        losses = self.compute_losses(gt["images"], gt["boxes"], gt["classes"], gt["masks"], training=False,
                                     labeled=gt.get("labeled"))
        return det_losses.update_loss_trackers(self._trackers, losses)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "backbone": ser(self.backbone),
            "decoder": ser(self.decoder),
            "rpn_head": ser(self.rpn_head),
            "box_head": ser(self.box_head),
            "mask_head": ser(self.mask_head),
            "config": dataclasses.asdict(self.config),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        parts = {k: keras.saving.deserialize_keras_object(config.pop(k)) for k in ("backbone", "decoder", "rpn_head", "box_head", "mask_head")}
        return cls(**parts, **config)


def _masked(weights, labeled) -> tf.Tensor:
    """``weights [B, ...]`` (bool or float) times the per-sample ``labeled [B]`` flag."""
    w = tf.cast(weights, tf.float32)
    return w * tf.reshape(labeled, tf.concat([[-1], tf.ones([tf.rank(w) - 1], tf.int32)], 0))


def _unpack(data) -> dict:
    if isinstance(data, dict):
        gt = data
    else:
        gt = {"images": data[0], **data[1]} if isinstance(data[1], dict) else None
    if gt is None or any(k not in gt for k in ("images", "boxes", "classes", "masks")):
        raise InvalidInputError("training data must provide images, boxes, classes and masks", path="data")
    return gt


def prepare_ground_truth(boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray], masks: Sequence[np.ndarray], config: MaskRCNNConfig) -> dict[str, np.ndarray]:
    """Validate, pad and mini-mask per-image annotations for :meth:`MaskRCNN.fit`.

    Args:
        boxes: ``B`` arrays ``[N_i, 4]`` pixel boxes on the network input.
        classes: ``B`` arrays ``[N_i]`` classes ``1..C``.
        masks: ``B`` arrays ``[N_i, S, S]`` full-image instance masks.
        config: Supplies ``image_size``, ``num_classes``, ``max_gt_instances``, ``mini_mask_size``.

    Returns:
        ``{"boxes" [B, N, 4], "classes" [B, N], "masks" [B, N, M, M], "count" [B]}``.

    Raises:
        InvalidInputError: Bad box/class (see ``validate_ground_truth``) or mask shape.
    """
    size = (config.image_size, config.image_size)
    b, c, n = pad_ground_truth(boxes, classes, config.max_gt_instances, size, config.num_classes)
    m = config.mini_mask_size
    out_m = np.zeros((len(boxes), config.max_gt_instances, m, m), np.float32)
    for i, mk in enumerate(masks):
        mk = np.asarray(mk)
        if mk.shape != (n[i], *size):
            raise InvalidInputError(f"masks must have shape {(int(n[i]), *size)}, got {mk.shape}", path=f"image[{i}].masks")
        out_m[i, : n[i]] = make_mini_masks(mk, b[i, : n[i]], m)
    return {"boxes": b, "classes": c, "masks": out_m, "count": n}


def build_mask_rcnn_parts(config: MaskRCNNConfig, weights: str | None = None) -> dict[str, Any]:
    """The default parts: ResNet backbone, FPN, RPN head, box head, mask head (all built)."""
    cfg = config
    reg = keras.regularizers.L2(cfg.weight_decay) if cfg.weight_decay > 0 else None
    backbone = build_resnet_backbone(
        (cfg.image_size, cfg.image_size, cfg.input_channels), cfg.stem_filters, cfg.stage_filters, cfg.stage_blocks,
        weights=weights, kernel_regularizer=reg,
    )
    return {
        "backbone": backbone,
        "decoder": build_fpn(backbone, cfg.fpn_filters, 2, 6, cfg.fpn_upsampling, reg),
        "rpn_head": RPNHead(len(cfg.rpn_anchor_ratios), cfg.rpn_filters, cfg.weight_decay, name="rpn"),
        "box_head": BoxClassHead(cfg.num_classes + 1, cfg.head_fc_filters, cfg.pool_size, cfg.weight_decay, name="box_head"),
        "mask_head": MaskHead(cfg.num_classes + 1, cfg.mask_filters, cfg.mask_convs, cfg.mask_upsample, cfg.weight_decay, name="mask_head"),
    }


@register("mask_rcnn_r50_fpn")
def build_mask_rcnn(config: MaskRCNNConfig | dict | None = None, weights: str | None = None, **overrides: Any) -> MaskRCNN:
    """Mask R-CNN R50-FPN with the seed's defaults; ``overrides`` replace config fields.

    Args:
        config: :class:`MaskRCNNConfig` or dict; None = Table 11 defaults.
        weights: None (from scratch, the seed) or a local keras.applications ResNet50 weights file.
        **overrides: Config fields.

    Returns:
        An uncompiled :class:`MaskRCNN`; compile with an optimizer (Table 11:
        ``keras.optimizers.Adam(1e-3, global_clipnorm=5.0)``; the experiments build it from a
        ``TrainConfig`` through :class:`tfmedseg.training.Trainer`).

    Raises:
        ConfigError: Unknown or invalid config field.
    """
    cfg = MaskRCNNConfig() if config is None else _as_config(config)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(MaskRCNNConfig)}
    if unknown:
        raise ConfigError(f"unknown Mask R-CNN config field(s) {sorted(unknown)}", path=sorted(unknown)[0])
    cfg = dataclasses.replace(cfg, **overrides)
    return MaskRCNN(**build_mask_rcnn_parts(cfg, weights), config=cfg, name="mask_rcnn")
