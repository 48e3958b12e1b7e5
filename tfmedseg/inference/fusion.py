"""Decision fusion of several segmentation models' masks (seed 003), and simple voting alternatives.

The seed fuses the binary masks ``P_1..P_M`` of M networks with a learned bias-free 1x1 convolution,
``Q = round(sigmoid(Σ_m w_m P_m))`` (eq. 8), trained with BCE (weights initialised at 0.25, SGD
lr 10, momentum 0.9, 5 epochs). With binary inputs and positive weights that formula is a logical
OR: ``Σ w_m P_m > 0`` as soon as one model fires, so ``sigmoid > 0.5``; and ``sigmoid(0) = 0.5``
rounds to 0. It contradicts the seed's own text ("2-3 models must agree").

We keep the seed's model and training but feed the vote in signed form, ``s_m = 2 P_m - 1`` in
{-1, +1}, so the logit is::

    z = Σ_m w_m (2 P_m - 1) = 2 (Σ_m w_m P_m - ½ Σ_m w_m)

i.e. the 1x1 convolution without bias on the signed masks equals a vote with the fixed offset
``-½ Σ w``. ``sigmoid(z) >= 0.5  <=>  Σ_m w̃_m P_m >= 0.5`` with ``w̃ = w / Σ w``: a **weighted
majority** of the normalised weights (which is how the seed reports its weights: none above 0.5,
better models weigh more). With the initial equal weights one of four votes gives ``z = -0.5 < 0``
(background), two of four give ``z = 0`` (a tie, counted as foreground: ``>=``), three or four give
foreground. Weights are kept non-negative. For probabilities instead of masks the same formula is a
weighted mean probability compared with 0.5. ``formulation="literal"`` builds the seed's equation
(on raw masks, strict ``> 0.5``) for comparison; it is the OR.
"""

from __future__ import annotations

import logging
import math

import keras
import numpy as np
from keras import ops

from tfmedseg.command import interruptible
from tfmedseg.errors import ConfigError, InvalidInputError
from tfmedseg.training.callbacks import PendingStop
from tfmedseg.validation import as_array, check_finite

_log = logging.getLogger(__name__)

__all__ = ["FORMULATIONS", "WeightedVote", "build_decision_fusion", "train_decision_fusion", "decision_fusion_predict",
           "normalized_weights", "fuse_mean_probability", "fuse_majority_vote"]

FORMULATIONS = ("majority", "literal")


@keras.saving.register_keras_serializable(package="tfmedseg")
class WeightedVote(keras.layers.Layer):
    """Bias-free 1x1 convolution over the model axis: the decision-fusion vote (seed 003 eq. 8).

    Input ``[B, *spatial, M]`` masks or probabilities in [0, 1]; output ``[B, *spatial, 1]`` logits
    ``Σ_m w_m (2 x_m - 1)`` (``"majority"``) or ``Σ_m w_m x_m`` (``"literal"``). Numerically this is
    ``Conv2D(1, 1, use_bias=False)`` (Conv3D for volumes) with kernel ``w``; written as a dot product so
    one layer serves 2D and 3D.

    Args:
        formulation: ``"majority"`` (default) or ``"literal"``.
        initial_weight: Initial value of every ``w_m`` (0.25, the seed).
    """

    def __init__(self, formulation: str = "majority", initial_weight: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        if formulation not in FORMULATIONS:
            raise ConfigError(f"must be one of {FORMULATIONS}, got {formulation!r}", path="formulation")
        self.formulation = formulation
        self.initial_weight = float(initial_weight)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(input_shape[-1]), 1),
            initializer=keras.initializers.Constant(self.initial_weight),
            constraint=keras.constraints.NonNeg(),
        )

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.formulation == "majority":
            x = 2.0 * x - 1.0
        return ops.matmul(x, self.kernel)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(formulation=self.formulation, initial_weight=self.initial_weight)
        return cfg


def build_decision_fusion(
    n_models: int = 4, rank: int = 2, formulation: str = "majority", initial_weight: float = 0.25,
    name: str = "decision_fusion",
) -> keras.Model:
    """The fusion network: ``[B, H, W, M]`` (or ``[B, D, H, W, M]``) votes -> ``[B, ..., 1]`` logits.

    Args:
        n_models: Number of fused models M (4 in the seed).
        rank: 2 for slices, 3 for volumes.
        formulation: ``"majority"`` (weighted majority, default) or ``"literal"`` (the seed's OR).
        initial_weight: Initial weight of every model (0.25).
        name: Model name.
    """
    if n_models < 1 or rank not in (2, 3):
        raise ConfigError(f"need n_models >= 1 and rank in (2, 3), got {n_models}, {rank}", path="n_models")
    inputs = keras.Input((None,) * rank + (n_models,), name="votes")
    logits = WeightedVote(formulation, initial_weight, name="vote")(inputs)
    return keras.Model(inputs, logits, name=name)


def _vote_layer(model: keras.Model) -> WeightedVote:
    for layer in model.layers:
        if isinstance(layer, WeightedVote):
            return layer
    raise InvalidInputError("has no WeightedVote layer; build it with build_decision_fusion", path="model")


def train_decision_fusion(
    model: keras.Model, masks, targets, epochs: int = 5, learning_rate: float = 10.0, momentum: float = 0.9,
    batch_size: int = 16, seed: int = 0, verbose: int = 0,
) -> dict[str, list[float]]:
    """Trains the fusion weights with the seed's recipe: BCE on logits, SGD lr 10, momentum 0.9.

    Args:
        model: From :func:`build_decision_fusion`.
        masks: ``[N, *spatial, M]`` cached model masks (or probabilities) in [0, 1].
        targets: ``[N, *spatial]`` or ``[N, *spatial, 1]`` reference masks.
        epochs, learning_rate, momentum, batch_size: The seed's values by default.
        seed: Shuffling seed.
        verbose: Keras verbosity.

    Returns:
        The Keras history dict (``loss`` per epoch).

    Raises:
        KeyboardInterrupt: Ctrl-C or SIGTERM (as :meth:`tfmedseg.training.Trainer.fit`,
            :func:`tfmedseg.command.interruptible`): one warning is logged and the stop propagates;
            nothing is written, and a rerun fits the weights again (seeded: the same result).
    """
    x = check_finite(as_array(masks, "masks").astype(np.float32), "masks")
    y = as_array(targets, "targets").astype(np.float32)
    if y.ndim == x.ndim - 1:
        y = y[..., None]
    if y.shape != x.shape[:-1] + (1,):
        raise InvalidInputError(f"must be {x.shape[:-1]} (+1), got {y.shape}", path="targets")
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    with interruptible(_log, "fusion-weight training", "nothing of it was written; a rerun fits the weights again"):
        hist = model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose,
                         callbacks=[PendingStop()])
    return hist.history


def normalized_weights(model: keras.Model) -> np.ndarray:
    """The fusion weights divided by their sum (the relative vote of each model)."""
    w = np.asarray(_vote_layer(model).kernel.numpy())[:, 0]
    return w / w.sum() if w.sum() > 0 else w


def decision_fusion_predict(model: keras.Model, masks, batch_size: int = 16) -> np.ndarray:
    """Fused bool mask ``[N, *spatial]`` of the votes ``[N, *spatial, M]``.

    ``"majority"``: foreground where the logit ``>= 0`` (normalised weighted vote >= 0.5).
    ``"literal"``: foreground where ``round(sigmoid(logit)) == 1``, i.e. logit ``> 0`` (the seed).
    """
    x = check_finite(as_array(masks, "masks").astype(np.float32), "masks")
    layer = _vote_layer(model)
    if x.shape[-1] != layer.kernel.shape[0]:
        raise InvalidInputError(f"must have {layer.kernel.shape[0]} model channels last, got shape {x.shape}",
                                path="masks")
    logits = model.predict(x, batch_size=batch_size, verbose=0)[..., 0]
    return logits >= 0 if layer.formulation == "majority" else logits > 0


def fuse_mean_probability(probabilities, threshold: float = 0.5, axis: int = -1) -> np.ndarray:
    """Foreground where the mean of the models' probabilities is ``>= threshold``."""
    p = check_finite(as_array(probabilities, "probabilities").astype(np.float32), "probabilities")
    return p.mean(axis=axis) >= threshold


def fuse_majority_vote(masks, axis: int = -1, min_votes: int | None = None) -> np.ndarray:
    """Foreground where at least ``min_votes`` models agree (default ``ceil(M / 2)``: ties count)."""
    m = as_array(masks, "masks") != 0
    n = m.shape[axis]
    k = math.ceil(n / 2) if min_votes is None else int(min_votes)
    if not 1 <= k <= n:
        raise ConfigError(f"must be in 1..{n}, got {k}", path="min_votes")
    return m.sum(axis=axis) >= k
