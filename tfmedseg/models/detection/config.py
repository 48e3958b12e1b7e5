"""The detection networks' settings: :class:`SSDConfig` (seed 001 Table 10), :class:`MaskRCNNConfig`
(Table 11) and :class:`MaligNetConfig` (MaligNet's additions), without TensorFlow.

They live apart from the builders (:mod:`~tfmedseg.models.detection.ssd`,
:mod:`~tfmedseg.models.detection.mask_rcnn`, :mod:`~tfmedseg.models.detection.malignet`, which
re-export them) so that an experiment's config dataclasses, and with them its ``--help``, load
without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfmedseg.config import check_choice, check_range
from tfmedseg.errors import ConfigError

__all__ = ["TABLE4_ROWS", "primary_row", "resolve_rows", "row_variant", "UPSAMPLING_MODES", "LOSS_NAMES", "UNSUPERVISED_LOSS", "SSDConfig", "MaskRCNNConfig", "MaligNetConfig",
           "as_mask_rcnn_config", "variant_name"]

#: Top-down x2 upsampling modes of the (ladder) FPN.
UPSAMPLING_MODES = ("nearest", "bilinear", "bicubic")

LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss")
# eq. 34: the ladder FPN's unsupervised cost (weight lambda_us = 1), present with such a decoder
UNSUPERVISED_LOSS = "denoising_loss"

_AR3 = (1.0, 2.0, 0.5)
_AR5 = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


@dataclasses.dataclass
class SSDConfig:
    """SSD512 settings; defaults are the seed's Table 10 plus ``ssd_keras`` SSD512 defaults.

    Attributes:
        image_size: Square network input side, pixels (Table 10: 512).
        input_channels: Image channels (1: a grey scintigram view).
        num_classes: Foreground classes (1: "chest"); the head predicts ``num_classes + 1``.
        scales, steps, offsets: Table 10 anchor settings (``L + 1``, ``L``, ``L`` values).
        aspect_ratios: ``L`` tuples of ``w / h`` ratios (``ssd_keras`` SSD512).
        two_boxes_for_ar1: Extra square anchor per cell.
        variances: Box-coder variances.
        backbone_filters: VGG-16 block widths (shrink for tests).
        fc_filters: ``fc6`` / ``fc7`` widths (1024).
        extra_filters: ``(1x1, 3x3 stride 2)`` widths of each extra block; ``L - 2`` blocks.
        l2_norm_scale: Initial scale of the ``conv4_3`` L2 normalisation (20).
        positive_iou, negative_iou: Anchor matching thresholds (``ssd_keras``: 0.5 / 0.3). Anchors
            whose best IoU lies in between are ignored: with ``negative_iou = positive_iou`` the
            near misses of an object (IoU 0.3-0.5, as good as its only matched anchor when no
            anchor reaches 0.5) become the hardest negatives and the class loss cannot fall.
        neg_pos_ratio: Hard-negative mining ratio (3).
        nms_iou: NMS IoU threshold (Table 10 "IoU threshold": 0.45).
        score_threshold: Minimum class score kept by NMS (``ssd_keras`` 0.01).
        max_detections: Boxes per image after NMS (``ssd_keras`` top_k 200).
        pre_nms_top_k: Candidates per class kept (best scores) before NMS; 0 = all anchors
            (``ssd_keras``, the default); torchvision's SSD keeps 400 (``topk_candidates``).
        weight_decay: L2 kernel regulariser (Table 10: 5e-4). Table 10's Adam 1e-3 and batch 16 are
            training settings: :class:`tfmedseg.training.config.TrainConfig` owns them (the
            experiment's ``ssd_stage``).
        max_instances: ``N_max`` of the padded ground truth.
        backbone_weights: VGG-16 initialisation: None (from scratch), ``"imagenet"`` (the seed,
            section 4.1 / Appendix B: the keras.applications ImageNet file from the Keras cache;
            offline without it -> ConfigError naming ``ssd.backbone_weights``), or a local
            keras.applications VGG16 notop weights file.
    """

    image_size: int = 512
    input_channels: int = 1
    num_classes: int = 1
    scales: tuple[float, ...] = (0.07, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05)
    steps: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    offsets: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    aspect_ratios: tuple[tuple[float, ...], ...] = (_AR3, _AR5, _AR5, _AR5, _AR5, _AR3, _AR3)
    two_boxes_for_ar1: bool = True
    variances: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    backbone_filters: tuple[int, ...] = (64, 128, 256, 512, 512)  # backbones.vgg.VGG16_FILTERS
    fc_filters: int = 1024
    extra_filters: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (128, 256), (128, 256))
    l2_norm_scale: float = 20.0
    positive_iou: float = 0.5
    negative_iou: float = 0.3
    neg_pos_ratio: float = 3.0
    nms_iou: float = 0.45
    score_threshold: float = 0.01
    max_detections: int = 200
    pre_nms_top_k: int = 0
    weight_decay: float = 5e-4
    max_instances: int = 10
    backbone_weights: str | None = None

    def __post_init__(self):
        levels = 2 + len(self.extra_filters)
        for key in ("steps", "offsets", "aspect_ratios"):
            if len(getattr(self, key)) != levels:
                raise ConfigError(
                    f"needs {levels} entries (2 VGG maps + {len(self.extra_filters)} extra blocks), "
                    f"got {len(getattr(self, key))}",
                    path=key,
                )
        if len(self.scales) != levels + 1:
            raise ConfigError(f"needs {levels + 1} scale factors, got {len(self.scales)}", path="scales")
        if self.num_classes < 1 or self.image_size < 1 or self.input_channels < 1:
            raise ConfigError("num_classes, image_size and input_channels must be positive", path="num_classes")
        if not 0.0 < self.negative_iou <= self.positive_iou <= 1.0:
            raise ConfigError(
                f"need 0 < negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}",
                path="negative_iou",
            )
        _check_ranges(self, "ssd", unit=("nms_iou", "score_threshold"), positive=("fc_filters", "max_detections", "max_instances"),
                      non_negative=("neg_pos_ratio", "weight_decay", "l2_norm_scale", "pre_nms_top_k"))

    @classmethod
    def tiny(cls, **overrides: Any) -> "SSDConfig":
        """A 64-px, 4-level, few-filter SSD for tests (same code path as the default)."""
        base = dict(
            image_size=64,
            scales=(0.15, 0.3, 0.6, 0.9, 1.05),
            steps=(8, 16, 32, 64),
            offsets=(0.5,) * 4,
            aspect_ratios=(_AR3, _AR3, _AR3, _AR3),
            backbone_filters=(8, 8, 16, 16, 16),
            fc_filters=16,
            extra_filters=((8, 16), (8, 16)),
            max_detections=10,
            max_instances=4,
        )
        base.update(overrides)
        return cls(**base)



@dataclasses.dataclass
class MaskRCNNConfig:
    """Mask R-CNN settings; defaults are Table 11's final column plus the Matterport defaults the
    spec names (§3f). Sizes marked "tiny" are shrunk by :meth:`tiny` for tests.

    Attributes:
        image_size, input_channels: Square input side (320) and channels (1).
        num_classes: Foreground classes ``C`` (4 lesion classes); heads predict ``C + 1``.
        stem_filters, stage_filters, stage_blocks: ResNet widths/depths (ResNet-50).
        fpn_filters, fpn_upsampling: Pyramid width (256) and top-down upsampling.
        rpn_anchor_scales, rpn_anchor_ratios, rpn_anchor_stride, anchor_offset: Table 11 anchors,
            one scale per level ``P2..P6``; centre offset 0.5 cell (Matterport uses 0).
        rpn_filters: RPN shared conv width (512).
        rpn_train_anchors_per_image, rpn_positive_fraction, rpn_positive_iou, rpn_negative_iou:
            RPN sampling (256, 0.5) and matching (0.7 / 0.3).
        rpn_nms_threshold, pre_nms_limit, post_nms_rois_training, post_nms_rois_inference:
            Proposal layer (0.7, 6000, 2000, 1000).
        rpn_bbox_std, bbox_std: Box-coder variances.
        train_rois_per_image, roi_positive_ratio, roi_positive_iou: Detection targets (200, 0.33, 0.5).
        pool_size, mask_pool_size, mask_upsample: ROIAlign sides (7, 14); no deconv -> 14x14 masks.
        head_fc_filters, mask_filters, mask_convs: Head widths (1024, 256, 4).
        roi_sampling_ratio: ROIAlign samples per bin side (1, Matterport).
        detection_min_confidence, detection_nms_threshold, detection_max_instances: 0.7, 0.3, 100.
        max_gt_instances, mini_mask_size: Padded ground truth (100) and mini-mask side (56).
        full_size_masks: Inference also returns pasted ``[B, D, H, W]`` uint8 masks.
        weight_decay: L2 kernel regulariser (Table 11: 1e-4). Table 11's Adam 1e-3, batch 16 and
            Matterport's global-norm clip 5 are training settings: :class:`tfmedseg.training.config.TrainConfig`
            owns them (the experiment's ``lesion_stage``).
        loss_weights: Weight of each of :data:`LOSS_NAMES` (all 1.0).
        seed: Seed of the ROI/anchor sampling ops.
    """

    image_size: int = 320
    input_channels: int = 1
    num_classes: int = 4
    stem_filters: int = 64
    stage_filters: tuple[int, ...] = (64, 128, 256, 512)
    stage_blocks: tuple[int, ...] = (3, 4, 6, 3)
    fpn_filters: int = 256
    fpn_upsampling: str = "nearest"
    rpn_anchor_scales: tuple[float, ...] = (32, 64, 128, 256, 512)
    rpn_anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_anchor_stride: int = 1
    anchor_offset: float = 0.5
    rpn_filters: int = 512
    rpn_train_anchors_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    rpn_nms_threshold: float = 0.7
    pre_nms_limit: int = 6000
    post_nms_rois_training: int = 2000
    post_nms_rois_inference: int = 1000
    rpn_bbox_std: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    bbox_std: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    train_rois_per_image: int = 200
    roi_positive_ratio: float = 0.33
    roi_positive_iou: float = 0.5
    pool_size: int = 7
    mask_pool_size: int = 14
    mask_upsample: bool = False
    head_fc_filters: int = 1024
    mask_filters: int = 256
    mask_convs: int = 4
    roi_sampling_ratio: int = 1
    detection_min_confidence: float = 0.7
    detection_nms_threshold: float = 0.3
    detection_max_instances: int = 100
    max_gt_instances: int = 100
    mini_mask_size: int = 56
    full_size_masks: bool = True
    weight_decay: float = 1e-4
    loss_weights: dict[str, float] = dataclasses.field(default_factory=lambda: {k: 1.0 for k in LOSS_NAMES})
    seed: int = 0

    def __post_init__(self):
        if len(self.rpn_anchor_scales) != 5:
            raise ConfigError(f"needs 5 anchor scales (P2..P6), got {len(self.rpn_anchor_scales)}", path="rpn_anchor_scales")
        if self.image_size % 64:
            raise ConfigError(f"image_size must be a multiple of 64 (P6 stride), got {self.image_size}", path="image_size")
        check_choice(self.fpn_upsampling, "mask_rcnn.fpn_upsampling", UPSAMPLING_MODES)
        unknown = set(self.loss_weights) - set(LOSS_NAMES) - {UNSUPERVISED_LOSS}
        if unknown:
            raise ConfigError(f"unknown loss name(s) {sorted(unknown)}; allowed: {LOSS_NAMES + (UNSUPERVISED_LOSS,)}",
                              path="loss_weights")
        if self.num_classes < 1 or not 0 < self.roi_positive_ratio <= 1:
            raise ConfigError("num_classes must be >= 1 and roi_positive_ratio in (0, 1]", path="num_classes")
        if self.train_rois_per_image > self.post_nms_rois_training:
            raise ConfigError("train_rois_per_image cannot exceed post_nms_rois_training", path="train_rois_per_image")
        if not 0.0 <= self.rpn_negative_iou <= self.rpn_positive_iou <= 1.0:
            raise ConfigError(f"need 0 <= rpn_negative_iou <= rpn_positive_iou <= 1, got {self.rpn_negative_iou}, "
                              f"{self.rpn_positive_iou}", path="mask_rcnn.rpn_negative_iou")
        _check_ranges(self, "mask_rcnn", unit=("rpn_positive_fraction", "rpn_nms_threshold", "roi_positive_iou", "anchor_offset",
                                               "detection_min_confidence", "detection_nms_threshold"),
                      positive=("input_channels", "stem_filters", "fpn_filters", "rpn_anchor_stride", "rpn_filters",
                                "rpn_train_anchors_per_image", "pre_nms_limit", "post_nms_rois_training",
                                "post_nms_rois_inference", "train_rois_per_image", "pool_size", "mask_pool_size",
                                "head_fc_filters", "mask_filters", "mask_convs", "roi_sampling_ratio",
                                "detection_max_instances", "max_gt_instances", "mini_mask_size"),
                      non_negative=("weight_decay",))

    @classmethod
    def tiny(cls, **overrides: Any) -> "MaskRCNNConfig":
        """A 64-px, few-filter model for tests (same code path as the default)."""
        base = dict(
            image_size=64, num_classes=2, stem_filters=8, stage_filters=(8, 8, 16, 16), stage_blocks=(1, 1, 1, 1),
            fpn_filters=16, rpn_anchor_scales=(8, 16, 32, 64, 128), rpn_filters=16, rpn_train_anchors_per_image=64,
            pre_nms_limit=300, post_nms_rois_training=64, post_nms_rois_inference=32, train_rois_per_image=32,
            head_fc_filters=32, mask_filters=16, mask_convs=2, detection_max_instances=8, max_gt_instances=4,
            mini_mask_size=28, detection_min_confidence=0.5,
        )
        base.update(overrides)
        return cls(**base)


def as_mask_rcnn_config(config) -> MaskRCNNConfig:
    """``config`` as a :class:`MaskRCNNConfig` (a dict's lists become tuples)."""
    if isinstance(config, MaskRCNNConfig):
        return config
    fields = dict(config)
    for f in dataclasses.fields(MaskRCNNConfig):
        if f.name in fields and isinstance(fields[f.name], list):
            fields[f.name] = tuple(fields[f.name])
    return MaskRCNNConfig(**fields)



@dataclasses.dataclass
class MaligNetConfig:
    """MaligNet's additions to the Mask R-CNN config (Table 11 and §3b/3d).

    Attributes:
        ladder_fpn: Use the ladder FPN decoder (False: the plain FPN of the baseline).
        global_features: Use the C6 global-feature classifier (False: the plain box head).
        noise_stddev: Gaussian noise sigma of the noisy encoder (Table 11: 0.03, absolute).
        unsupervised_weight: ``lambda_us`` of the denoising cost (L1254: 1).
        upsampling: LFPN top-down x2 upsampling (Fig. 7: ``bicubic``).
        stop_target_gradient: Detach the clean denoising targets (ladder networks: no).
        global_filters: Width ``E`` of the C6 embedding (not in the seed); None: the pyramid width
            ``fpn_filters`` (256 in the paper setting, so the classifier sees ROI and global features
            in equal parts and its first conv costs 2x the baseline's, not more).
    """

    ladder_fpn: bool = True
    global_features: bool = True
    noise_stddev: float = 0.03
    unsupervised_weight: float = 1.0
    upsampling: str = "bicubic"
    stop_target_gradient: bool = False
    global_filters: int | None = None

    def __post_init__(self) -> None:
        _check_ranges(self, "malignet", positive=("global_filters",), non_negative=("noise_stddev", "unsupervised_weight"))
        check_choice(self.upsampling, "malignet.upsampling", UPSAMPLING_MODES)


def _check_ranges(config: Any, prefix: str, *, unit: tuple[str, ...] = (), positive: tuple[str, ...] = (),
                  non_negative: tuple[str, ...] = ()) -> None:
    """:func:`~tfmedseg.config.check_range` on the named fields of ``config`` (``unit``: in [0, 1],
    ``positive``: integers >= 1 or None, ``non_negative``: numbers >= 0); errors name ``prefix.field``."""
    for names, low, high, integer in ((unit, 0.0, 1.0, False), (positive, 1, None, True), (non_negative, 0.0, None, False)):
        for name in names:
            check_range(getattr(config, name), f"{prefix}.{name}", low, high, integer=integer)


def variant_name(config: MaligNetConfig) -> str:
    """Table 4's approach name of a configuration (``ResNet50 + LFPN w/ global features``...)."""
    decoder = "LFPN" if config.ladder_fpn else "FPN"
    if config.ladder_fpn and config.global_features:
        return "ResNet50 + LFPN w/ global features (MaligNet)"
    if config.ladder_fpn:
        return "ResNet50 + LFPN w/o global features"
    return f"ResNet50 + {decoder} w/ global features" if config.global_features else "ResNet50 + FPN (Mask R-CNN)"


#: Table 4's rows: ``name -> (label, ladder_fpn, global_features, unlabeled views, self-training)``;
#: ``mask_rcnn`` is the plain Mask R-CNN, the next three switch MaligNet's two additions, the last two
#: add the unlabeled views (eq. 34-35) and then a self-training round (Table 8) to the full MaligNet.
TABLE4_ROWS = {
    "mask_rcnn": ("ResNet50 + FPN (Mask R-CNN)", False, False, False, False),
    "global": ("ResNet50 + FPN w/ global features", False, True, False, False),
    "lfpn": ("ResNet50 + LFPN w/o global features", True, False, False, False),
    "malignet": ("ResNet50 + LFPN w/ global features (MaligNet)", True, True, False, False),
    "unlabeled": ("MaligNet + unlabeled data", True, True, True, False),
    "self_training": ("MaligNet + unlabeled data + self-training", True, True, True, True),
}


def row_variant(row: str, base: "MaligNetConfig") -> "MaligNetConfig | None":
    """The model of a Table 4 row: ``base`` with the row's two switches, or None for ``mask_rcnn``.

    Raises:
        ConfigError: Unknown row (the allowed names are :data:`TABLE4_ROWS`).
    """
    if row not in TABLE4_ROWS:
        raise ConfigError(f"unknown Table 4 row {row!r}; allowed: {tuple(TABLE4_ROWS)}", path="table4_rows")
    _, ladder, glob, _, _ = TABLE4_ROWS[row]
    return dataclasses.replace(base, ladder_fpn=ladder, global_features=glob) if ladder or glob else None


def resolve_rows(rows, lesion_model: str, base: "MaligNetConfig", unlabeled_per_batch: int) -> list[tuple]:
    """The lesion models an experiment trains: ``[(row, MaligNetConfig or None for Mask R-CNN, unlabeled
    views per batch)]``; without ``rows``, the one ``lesion_model`` (``base`` switches as given).

    Raises:
        ConfigError: Unlabeled views without a ladder FPN, an unknown row, an ``unlabeled`` / ``self_training`` row with ``unlabeled_per_batch``
            0, or ``self_training`` first (it needs a teacher row before it).
    """
    if not rows:
        if unlabeled_per_batch and not (lesion_model == "malignet" and base.ladder_fpn):
            raise ConfigError("unlabeled views only train through the ladder FPN's denoising cost: set lesion_model: "
                              "malignet (with malignet.ladder_fpn) or keep 0", path="unlabeled_per_batch")
        return [(lesion_model, base if lesion_model == "malignet" else None, unlabeled_per_batch)]
    out = [(r, row_variant(r, base), unlabeled_per_batch if TABLE4_ROWS[r][3] else 0) for r in rows]
    if any(TABLE4_ROWS[r][3] for r in rows) and unlabeled_per_batch < 1:
        raise ConfigError("the unlabeled / self_training rows need unlabeled_per_batch >= 1", path="unlabeled_per_batch")
    if rows[0] == "self_training":
        raise ConfigError("self_training needs a row before it (its teacher)", path="table4_rows")
    return out


def primary_row(rows: list[tuple], explicit: str | None = None) -> str:
    """The row an experiment exports and compares with Mask R-CNN: ``explicit``, else the last row
    before ``self_training`` (:func:`resolve_rows` output)."""
    names = [r[0] for r in rows]
    if explicit is not None and explicit not in names:
        raise ConfigError(f"{explicit!r} is not one of the trained rows {names}", path="primary_row")
    return explicit or ([r for r in names if r != "self_training"] or names)[-1]
