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

from tfmedseg.models.detection.global_features import GlobalFeatureBoxHead
from tfmedseg.models.detection.ladder_fpn import build_ladder_fpn
from tfmedseg.models.detection.mask_rcnn import (
    UNSUPERVISED_LOSS,
    MaskRCNN,
    MaskRCNNConfig,
    _as_config,
    build_mask_rcnn_parts,
)
from tfmedseg.models.detection.config import (  # noqa: F401  (re-exported)
    TABLE4_ROWS,
    MaligNetConfig,
    primary_row,
    resolve_rows,
    row_variant,
    variant_name,
)
from tfmedseg.models.registry import register

__all__ = ["TABLE4_ROWS", "MaligNetConfig", "build_malignet", "build_malignet_parts", "primary_row", "resolve_rows", "row_variant", "variant_name"]



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
