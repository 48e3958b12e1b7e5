"""tfmedseg.losses: segmentation losses and the ``get_loss`` factory.

Example:
    >>> from tfmedseg.losses import get_loss
    >>> loss = get_loss("dice", from_logits=True, activation="sigmoid")
    >>> loss.name
    'dice_loss'
"""

from __future__ import annotations

from tfmedseg.errors import ConfigError
from tfmedseg.losses.segmentation import (
    ACTIVATIONS,
    BCEWithLogitsLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    JaccardLoss,
    WeightedCrossEntropyLoss,
    soft_dice_per_class,
)

__all__ = [
    "ACTIVATIONS",
    "LOSS_NAMES",
    "BCEWithLogitsLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "WeightedCrossEntropyLoss",
    "get_loss",
    "soft_dice_per_class",
]

_LOSSES = {
    "dice": DiceLoss,
    "dice_ce": DiceCELoss,
    "bce_with_logits": BCEWithLogitsLoss,
    "weighted_ce": WeightedCrossEntropyLoss,
    "jaccard": JaccardLoss,
    "focal": FocalLoss,
}
LOSS_NAMES = tuple(_LOSSES)


def get_loss(name: str, **kwargs):
    """Build a loss by name.

    Args:
        name: One of :data:`LOSS_NAMES` (``"dice"``, ``"dice_ce"``, ``"bce_with_logits"``,
            ``"weighted_ce"``, ``"jaccard"``, ``"focal"``).
        **kwargs: Constructor arguments of the loss class.

    Returns:
        A ``keras.losses.Loss`` returning per-sample values.

    Raises:
        ConfigError: Unknown name (the message lists the allowed names) or bad arguments.
    """
    if name not in _LOSSES:
        raise ConfigError(f"unknown loss {name!r}; allowed: {LOSS_NAMES}", path="loss")
    try:
        return _LOSSES[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for loss {name!r}: {exc}", path="loss_kwargs") from exc
