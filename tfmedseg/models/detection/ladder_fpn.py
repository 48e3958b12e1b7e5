"""Ladder feature pyramid network (LFPN), MaligNet's decoder (seed 001 §3b, eq. 28-30, Fig. 7).

Each pyramid level ``l = 2..5`` is a small ladder network (Rasmus et al., 2015) laid over the FPN:

* clean encoder (eq. 28): ``z0 = C_l``; ``z1 = f1_l(z0) + up(z1_{l+1})`` (no sum at ``l = 5``);
  ``z2 = f2_l(z1) = P_l``; ``f1_l`` the lateral 1x1 conv (``fpn_c{l}p{l}``), ``f2_l`` the 3x3
  output conv (``fpn_p{l}``), ``up`` **bicubic** x2 (the seed's Fig. 7; FPN uses nearest);
* noisy encoder (eq. 29), the SAME layers: ``z~0 = C_l + n``; ``z~1 = f1_l(z~0) + up(z~1_{l+1}) + n``;
  ``z~2 = f2_l(z~1) + n``, ``n ~ N(0, sigma^2)`` drawn afresh at each of the 3 steps (sigma 0.03,
  Table 11's "Gaussian noise ratio");
* denoising decoder per level (purple blocks of Fig. 7): ``zh2 = BN(ConvT(z~2))``,
  ``zh1 = BN(ConvT(concat[z~1, zh2]))``, ``zh0 = BN(ConvT_1x1(concat[z~0, zh1]))`` (Conv2DTranspose
  stride 1 keeps each level's size; ``zh0`` has ``C_l``'s channels);
* unsupervised cost (eq. 30): ``C_LFPN,d = 1 / 12 sum_{l, m} mean((z_m - zh_m)^2)``, the mean of the
  12 per-element MSEs (4 levels x 3 steps), over every image of the batch, labeled or not.

``P6 = maxpool(1, stride 2)(P5)`` (Matterport) on whichever pyramid is returned. In training the
RPN and heads read the noisy pyramid, at inference the clean one (L748): :meth:`LadderFPN.call`
returns the noisy pyramid with ``training=True`` and the clean one otherwise, so the layer is a
drop-in ``decoder`` of :class:`~tfmedseg.models.detection.mask_rcnn.MaskRCNN`. The inference path
never runs the decoders (their variables exist only for training). :meth:`LadderFPN.ladder` returns
the pyramid and the denoising cost together (what ``MaskRCNN.compute_losses`` calls).

Choices where the seed is silent (spec §3b', also in ``docs/detection.md``): sigma is an absolute
standard deviation (Keras ``GaussianNoise`` semantics, not relative to each map's scale); the
decoder concatenates its two inputs; the clean targets keep their gradients (as in ladder
networks; ``stop_target_gradient=True`` detaches them); the per-pair MSE is a mean over elements.

Example:
    >>> from tfmedseg.models.backbones.resnet import build_resnet_backbone
    >>> bb = build_resnet_backbone((64, 64, 1), 4, (4, 4, 4, 4), (1, 1, 1, 1))
    >>> lfpn = build_ladder_fpn(bb, filters=8)
    >>> out = lfpn.ladder({k: keras.ops.zeros((1, *v.shape[1:])) for k, v in bb.output.items()}, training=True)
    >>> sorted(out["pyramid"]), tuple(out["pyramid"]["P6"].shape), out["denoising_cost"].shape
    (['P2', 'P3', 'P4', 'P5', 'P6'], (1, 1, 1, 8), TensorShape([]))
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmedseg.errors import ConfigError, ModelBuildError
from tfmedseg.models.detection.config import UPSAMPLING_MODES
from tfmedseg.config import attribute_config

__all__ = ["LEVELS", "STEPS", "LadderFPN", "build_ladder_fpn"]

LEVELS = (2, 3, 4, 5)
STEPS = (0, 1, 2)


@keras.saving.register_keras_serializable(package="tfmedseg")
class LadderFPN(keras.layers.Layer):
    """Clean and noisy FPN encoders sharing weights, plus per-level denoising decoders.

    Args:
        level_channels: ``{"C2": c2, .., "C5": c5}`` backbone channels (sizes of the ``zh0`` outputs).
        filters: Pyramid width (256).
        noise_stddev: Gaussian noise sigma added at each of the 3 steps per level (0.03).
        upsampling: Top-down x2 upsampling (``bicubic``, the seed; any of ``UPSAMPLING_MODES``).
        stop_target_gradient: Detach the clean targets of the denoising cost (default False).
        weight_decay: L2 factor on every kernel.
        seed: Seed of the noise generator.

    Call args:
        features: ``{"C2": [B, H/4, W/4, c2], .., "C5": [B, H/32, W/32, c5]}``.
        training: True: noisy pyramid (and batch statistics in the decoders' BN); False: clean.

    Returns:
        ``{"P2": [B, H/4, W/4, filters], .., "P6": [B, H/64, W/64, filters]}``.
    """

    def __init__(self, level_channels: dict, filters: int = 256, noise_stddev: float = 0.03, upsampling: str = "bicubic",
                 stop_target_gradient: bool = False, weight_decay: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if upsampling not in UPSAMPLING_MODES:
            raise ConfigError(f"unknown upsampling {upsampling!r}; allowed: {UPSAMPLING_MODES}", path="upsampling")
        if noise_stddev < 0:
            raise ConfigError(f"noise_stddev must be >= 0, got {noise_stddev}", path="noise_stddev")
        missing = [f"C{l}" for l in LEVELS if f"C{l}" not in level_channels]
        if missing:
            raise ModelBuildError(f"backbone features lack {missing}", path="backbone")
        self.level_channels = {f"C{l}": int(level_channels[f"C{l}"]) for l in LEVELS}
        self.filters = int(filters)
        self.noise_stddev = float(noise_stddev)
        self.upsampling = upsampling
        self.stop_target_gradient = bool(stop_target_gradient)
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        reg = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
        f = self.filters
        # lists (not dicts with int keys) so that Keras tracks the layers in a stable order
        self.lateral = [keras.layers.Conv2D(f, 1, kernel_regularizer=reg, name=f"fpn_c{l}p{l}") for l in LEVELS]
        self.smooth = [keras.layers.Conv2D(f, 3, padding="same", kernel_regularizer=reg, name=f"fpn_p{l}") for l in LEVELS]
        self.upsample = keras.layers.UpSampling2D(2, interpolation=upsampling, name="fpn_upsampled")
        self.pool = keras.layers.MaxPooling2D(1, 2, name="fpn_p6")

        self.decoder_convs, self.decoder_bns = [], []
        for l in LEVELS:
            for m in STEPS:
                ch = self.level_channels[f"C{l}"] if m == 0 else f
                self.decoder_convs.append(keras.layers.Conv2DTranspose(
                    ch, 1 if m == 0 else 3, padding="same", kernel_regularizer=reg, name=f"lfpn_dec{l}_{m}"))
                self.decoder_bns.append(keras.layers.BatchNormalization(name=f"lfpn_dec{l}_{m}_bn"))
        self.noise_seed = keras.random.SeedGenerator(self.seed, name="lfpn_noise_seed")

    def _decoder(self, l: int, m: int):
        i = LEVELS.index(l) * len(STEPS) + m
        return self.decoder_convs[i], self.decoder_bns[i]

    def build(self, input_shape=None):
        f = self.filters
        for i, l in enumerate(LEVELS):
            c = self.level_channels[f"C{l}"]
            self.lateral[i].build((None, None, None, c))
            self.smooth[i].build((None, None, None, f))
            for m, cin in ((2, f), (1, 2 * f), (0, c + f)):
                conv, bn = self._decoder(l, m)
                conv.build((None, None, None, cin))
                bn.build((None, None, None, c if m == 0 else f))
        self.built = True

    @property
    def encoder_variables(self) -> list:
        """The weights both encoder paths use (the lateral and output convs)."""
        return [v for layer in self.lateral + self.smooth for v in layer.weights]

    @property
    def decoder_variables(self) -> list:
        """The denoising decoders' weights (used by the training cost only)."""
        return [v for layer in self.decoder_convs + self.decoder_bns for v in layer.weights]

    # -- encoders -----------------------------------------------------------------------------
    def _noise(self, x, sigma):
        if sigma is None or sigma == 0:
            return x
        return x + keras.random.normal(tf.shape(x), stddev=sigma, seed=self.noise_seed, dtype=x.dtype)

    def encode(self, features: dict, noise_stddev: float | None = None) -> dict:
        """One encoder pass (clean with ``noise_stddev`` 0/None, noisy otherwise).

        Returns:
            ``{(l, m): z}`` for the 12 level/step pairs; ``(l, 2)`` is ``P_l``.
        """
        z = {}
        top = None
        for l in reversed(LEVELS):
            z0 = self._noise(tf.convert_to_tensor(features[f"C{l}"]), noise_stddev)
            z1 = self.lateral[LEVELS.index(l)](z0)
            if top is not None:
                z1 = z1 + self.upsample(top)
            z1 = self._noise(z1, noise_stddev)
            z2 = self._noise(self.smooth[LEVELS.index(l)](z1), noise_stddev)
            z[(l, 0)], z[(l, 1)], z[(l, 2)] = z0, z1, z2
            top = z1
        return z

    def decode(self, noisy: dict, training: bool = False) -> dict:
        """Denoising decoders on the noisy encoder's maps: ``{(l, m): zh}`` (12 maps)."""
        out = {}
        for l in LEVELS:
            conv, bn = self._decoder(l, 2)
            out[(l, 2)] = bn(conv(noisy[(l, 2)]), training=training)
            conv, bn = self._decoder(l, 1)
            out[(l, 1)] = bn(conv(tf.concat([noisy[(l, 1)], out[(l, 2)]], -1)), training=training)
            conv, bn = self._decoder(l, 0)
            out[(l, 0)] = bn(conv(tf.concat([noisy[(l, 0)], out[(l, 1)]], -1)), training=training)
        return out

    def pyramid(self, z: dict) -> dict:
        """``{"P2".."P6"}`` from an encoder pass."""
        out = {f"P{l}": z[(l, 2)] for l in LEVELS}
        out["P6"] = self.pool(out["P5"])
        return out

    def denoising_cost(self, clean: dict, reconstructed: dict) -> tf.Tensor:
        """Eq. 30: mean over the 12 pairs of the per-element squared error (scalar float32)."""
        terms = []
        for key in sorted(clean):
            target = tf.stop_gradient(clean[key]) if self.stop_target_gradient else clean[key]
            terms.append(tf.reduce_mean(tf.square(tf.cast(target, tf.float32) - tf.cast(reconstructed[key], tf.float32))))
        return tf.add_n(terms) / float(len(terms))

    def ladder(self, features: dict, training: bool = False) -> dict:
        """Both encoders and the decoders.

        Returns:
            ``{"pyramid": noisy (training) or clean pyramid, "clean": clean pyramid,
            "denoising_cost": scalar C_LFPN,d}``.
        """
        clean = self.encode(features, None)
        noisy = self.encode(features, self.noise_stddev)
        cost = self.denoising_cost(clean, self.decode(noisy, training=training))
        return {"pyramid": self.pyramid(noisy if training else clean), "clean": self.pyramid(clean), "denoising_cost": cost}

    def call(self, features, training=False):
        return self.pyramid(self.encode(features, self.noise_stddev if training else None))

    @property
    def has_unsupervised_loss(self) -> bool:
        """Marks the decoder contract ``ladder(features, training) -> {"pyramid", "denoising_cost"}``."""
        return True

    def get_config(self):
        return attribute_config(super().get_config(), self, "filters", "noise_stddev", "upsampling", "stop_target_gradient",
                                "weight_decay", "seed", level_channels=dict(self.level_channels))


def build_ladder_fpn(backbone: keras.Model, filters: int = 256, noise_stddev: float = 0.03, upsampling: str = "bicubic",
                     stop_target_gradient: bool = False, weight_decay: float = 0.0, seed: int = 0,
                     name: str = "ladder_fpn") -> LadderFPN:
    """A built :class:`LadderFPN` for ``backbone`` (a functional model returning ``{"C2".."C5"}``)."""
    channels = {k: int(v.shape[-1]) for k, v in backbone.output.items()}
    layer = LadderFPN(channels, filters, noise_stddev, upsampling, stop_target_gradient, weight_decay, seed, name=name)
    layer.build()
    return layer
