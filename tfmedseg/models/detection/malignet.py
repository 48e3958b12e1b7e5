"""MaligNet (seed 001 §3, Fig. 6): Mask R-CNN R50 with a ladder FPN and a global-feature classifier.

Composition on :class:`~tfmedseg.models.detection.mask_rcnn.MaskRCNN`'s seams:

* ``decoder`` = :class:`~tfmedseg.models.detection.ladder_fpn.LadderFPN` (clean/noisy encoders
  sharing weights, denoising decoders, unsupervised cost ``denoising_loss`` weighted by
  ``lambda_us = 1``, eq. 34-35); the RPN and heads read the noisy pyramid in training and the clean
  one at inference;
* ``box_head`` = :class:`~tfmedseg.models.detection.global_features.GlobalFeatureBoxHead` (C5 ->
  C6 embedding tiled per ROI, classifier only).

Both switch independently (:class:`MaligNetConfig`), which gives Table 4's first four rows:
Mask R-CNN, + global features, + LFPN, + both (MaligNet). Batches may mix unlabeled views
(``labeled`` flag per sample): the five supervised losses are masked to the labeled samples and the
denoising cost is taken over all of them.

Example:
    >>> from tfmedseg.models.detection.mask_rcnn import MaskRCNNConfig
    >>> model = build_malignet(MaskRCNNConfig.tiny(), MaligNetConfig(global_filters=8))
    >>> model.loss_names[-1], type(model.decoder).__name__, type(model.box_head).__name__
    ('denoising_loss', 'LadderFPN', 'GlobalFeatureBoxHead')
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfmedseg.errors import ConfigError
from tfmedseg.models.detection.fpn import UPSAMPLING_MODES
from tfmedseg.models.detection.global_features import GlobalFeatureBoxHead
from tfmedseg.models.detection.ladder_fpn import build_ladder_fpn
from tfmedseg.models.detection.mask_rcnn import (
    UNSUPERVISED_LOSS,
    MaskRCNN,
    MaskRCNNConfig,
    _as_config,
    build_mask_rcnn_parts,
)
from tfmedseg.models.registry import register

__all__ = ["MaligNetConfig", "build_malignet", "build_malignet_parts", "variant_name"]


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
        if self.noise_stddev < 0:
            raise ConfigError(f"must be >= 0, got {self.noise_stddev}", path="malignet.noise_stddev")
        if self.unsupervised_weight < 0:
            raise ConfigError(f"must be >= 0, got {self.unsupervised_weight}", path="malignet.unsupervised_weight")
        if self.upsampling not in UPSAMPLING_MODES:
            raise ConfigError(f"unknown upsampling {self.upsampling!r}; allowed: {UPSAMPLING_MODES}", path="malignet.upsampling")
        if self.global_filters is not None and self.global_filters < 1:
            raise ConfigError(f"must be >= 1, got {self.global_filters}", path="malignet.global_filters")


def variant_name(config: MaligNetConfig) -> str:
    """Table 4's approach name of a configuration (``ResNet50 + LFPN w/ global features``...)."""
    decoder = "LFPN" if config.ladder_fpn else "FPN"
    if config.ladder_fpn and config.global_features:
        return "ResNet50 + LFPN w/ global features (MaligNet)"
    if config.ladder_fpn:
        return "ResNet50 + LFPN w/o global features"
    return f"ResNet50 + {decoder} w/ global features" if config.global_features else "ResNet50 + FPN (Mask R-CNN)"


def build_malignet_parts(config: MaskRCNNConfig, malignet: MaligNetConfig, weights: str | None = None) -> dict[str, Any]:
    """Mask R-CNN's parts with the ladder FPN and/or the global-feature head swapped in."""
    cfg = config
    parts = build_mask_rcnn_parts(cfg, weights)
    if malignet.ladder_fpn:
        parts["decoder"] = build_ladder_fpn(
            parts["backbone"], cfg.fpn_filters, malignet.noise_stddev, malignet.upsampling, malignet.stop_target_gradient,
            cfg.weight_decay, seed=cfg.seed + 7,
        )
    if malignet.global_features:
        parts["box_head"] = GlobalFeatureBoxHead(cfg.num_classes + 1, cfg.head_fc_filters, cfg.pool_size, cfg.weight_decay,
                                                 malignet.global_filters or cfg.fpn_filters, name="box_head")
    return parts


@register("malignet_r50_lfpn")
def build_malignet(config: MaskRCNNConfig | dict | None = None, malignet: MaligNetConfig | dict | None = None,
                   weights: str | None = None, **overrides: Any) -> MaskRCNN:
    """MaligNet (or one of its Table 4 ablations) with the seed's defaults.

    Args:
        config: Mask R-CNN settings (:class:`MaskRCNNConfig` or dict; None: Table 11).
        malignet: :class:`MaligNetConfig` or dict (None: full MaligNet).
        weights: None (from scratch, the seed) or a local keras.applications ResNet50 file.
        **overrides: Mask R-CNN config fields.

    Returns:
        An uncompiled :class:`MaskRCNN` (``model.loss_names`` ends in ``denoising_loss`` with the
        ladder FPN); compile with an optimizer (Table 11: ``keras.optimizers.Adam(1e-3, global_clipnorm=5.0)``).
    """
    cfg = MaskRCNNConfig() if config is None else _as_config(config)
    mcfg = malignet if isinstance(malignet, MaligNetConfig) else MaligNetConfig(**(malignet or {}))
    cfg = dataclasses.replace(cfg, **overrides)
    if mcfg.ladder_fpn:
        cfg = dataclasses.replace(cfg, loss_weights={**cfg.loss_weights, UNSUPERVISED_LOSS: mcfg.unsupervised_weight})
    name = "malignet" if mcfg.ladder_fpn or mcfg.global_features else "mask_rcnn"
    return MaskRCNN(**build_malignet_parts(cfg, mcfg, weights), config=cfg, name=name)
