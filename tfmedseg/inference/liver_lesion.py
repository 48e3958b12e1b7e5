"""Seed 003's two-stage fused segmentation of a CT volume: liver, then lesions in the liver VOI.

The pipeline works on callables, so the same code serves the trained Keras networks (experiment) and
the exported SavedModel bundle (application, :func:`load_fusion_bundle`):

* ``liver_votes(x)`` / ``lesion_votes(x)``: ``[B, S, S, 1]`` float32 -> ``[B, S, S, M]`` logits, one
  channel per network (M = 4 in the seed);
* ``liver_fuse(v)`` / ``lesion_fuse(v)``: ``[B, S, S, M]`` binary votes -> ``[B, S, S, 1]`` logits of
  the learned weighted-majority vote (:mod:`tfmedseg.inference.fusion`; foreground where ``>= 0``).

Steps for ``hu`` ``[D, H, W]`` (spec sections 2, 4, 5):

1. liver input (:func:`tfmedseg.preprocessing.liver_lesion.liver_input`), each network's mask
   ``logit > 0``; per network the per-slice liver filter (:func:`~tfmedseg.inference.postprocess.filter_liver_slices`;
   the seed's 200 px at 512 x 512 scaled to the network grid); fusion of the filtered masks and the
   filter again on the fused mask;
2. the fused liver mask resized (bilinear, threshold 0.5) to ``[D, H, W]`` (the seed's "512");
3. lesion input: the square VOI of that liver mask with CLAHE; each network's mask, components
   under ``lesion_min_size`` px removed per slice, fusion, the same removal;
4. lesion masks put back on the source grid (resize to the VOI size, zero-pad, empty slices outside
   the VOI's z range) and kept inside the liver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfmedseg.errors import InvalidInputError
from tfmedseg.inference.postprocess import filter_liver_slices, remove_small_components
from tfmedseg.preprocessing.liver_lesion import lesion_input, liver_input
from tfmedseg.preprocessing.resample import resize_array

__all__ = [
    "BUNDLE_SETTINGS",
    "PipelineSettings",
    "TwoStageResult",
    "filter_lesions",
    "filter_liver",
    "fuse_masks",
    "keras_votes",
    "load_fusion_bundle",
    "network_masks",
    "segment_liver_lesions",
    "upsample_mask",
]

logger = logging.getLogger(__name__)
VotesFn = Callable[[np.ndarray], np.ndarray]
#: Name of the settings file inside an exported bundle.
BUNDLE_SETTINGS = "metadata.json"


@dataclasses.dataclass
class PipelineSettings:
    """Pre- and post-processing of the two-stage pipeline (defaults: the seed).

    Attributes:
        size: Network in-plane size (256).
        hu_window: HU window mapped to [-1, 1] ((-250, 250)).
        liver_max_distance_px: Liver filter centroid distance at 512 x 512 (200), scaled to ``size``.
        liver_min_area_fraction: Liver filter area fraction (1/8).
        lesion_min_size: Lesion components below this many pixels (network grid) are removed (10).
        clahe / clip_limit: CLAHE on the lesion VOI (skimage clip limit 0.01).
        batch_size: Slices per network call.
    """

    size: int = 256
    hu_window: tuple[float, float] = (-250.0, 250.0)
    liver_max_distance_px: float = 200.0
    liver_min_area_fraction: float = 0.125
    lesion_min_size: int = 10
    clahe: bool = True
    clip_limit: float = 0.01
    batch_size: int = 16

    @property
    def scaled_distance(self) -> float:
        return self.liver_max_distance_px * self.size / 512.0


@dataclasses.dataclass
class TwoStageResult:
    """Masks on the source grid ``[D, H, W]`` (bool).

    Attributes:
        liver / lesion: The fused (and post-processed) masks.
        liver_models_raw / liver_models_post: Per network, before / after the liver filter
            (only with ``keep_models``).
        lesion_models: Per network, on the fused liver's VOI, small components removed.
    """

    liver: np.ndarray
    lesion: np.ndarray
    liver_models_raw: list = dataclasses.field(default_factory=list)
    liver_models_post: list = dataclasses.field(default_factory=list)
    lesion_models: list = dataclasses.field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        """uint8 label map: 0 background, 1 liver, 2 lesion."""
        out = self.liver.astype(np.uint8)
        out[self.lesion] = 2
        return out


def keras_votes(models) -> VotesFn:
    """A votes/fuse callable from Keras models: ``[B, S, S, C]`` -> ``[B, S, S, M]`` (first output
    channel of each model, concatenated), run as one compiled ``tf.function``."""
    import tensorflow as tf

    models = list(models)

    @tf.function(reduce_retracing=True)
    def run(x):
        return tf.concat([tf.cast(m(x, training=False), tf.float32)[..., :1] for m in models], axis=-1)

    return lambda x: run(tf.constant(x, tf.float32)).numpy()


def network_masks(votes: VotesFn, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """``[N, S, S]`` inputs -> bool ``[N, S, S, M]`` masks (``logit > 0``, i.e. sigmoid > 0.5)."""
    out = [np.asarray(votes(x[i:i + batch_size, ..., None].astype(np.float32))) > 0 for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(x.shape + (0,), bool)


def fuse_masks(fuse: VotesFn, masks: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """``[N, S, S, M]`` masks -> bool ``[N, S, S]`` weighted-majority vote (fusion logit ``>= 0``)."""
    out = [np.asarray(fuse(masks[i:i + batch_size].astype(np.float32)))[..., 0] >= 0 for i in range(0, len(masks), batch_size)]
    return np.concatenate(out) if out else np.zeros(masks.shape[:-1], bool)


def filter_liver(masks: np.ndarray, settings: PipelineSettings) -> np.ndarray:
    """The per-slice liver filter on ``[N, S, S]`` or on every network of ``[N, S, S, M]``."""
    if masks.ndim == 4:
        return np.stack([filter_liver(masks[..., m], settings) for m in range(masks.shape[-1])], axis=-1)
    return filter_liver_slices(masks, settings.scaled_distance, settings.liver_min_area_fraction).astype(bool)


def filter_lesions(masks: np.ndarray, settings: PipelineSettings) -> np.ndarray:
    """Per slice, lesion components under ``lesion_min_size`` pixels removed (``[N, S, S]`` or ``[..., M]``)."""
    if masks.ndim == 4:
        return np.stack([filter_lesions(masks[..., m], settings) for m in range(masks.shape[-1])], axis=-1)
    return np.stack([remove_small_components(s, settings.lesion_min_size).astype(bool) for s in masks]) if len(masks) else masks


def upsample_mask(mask: np.ndarray, shape) -> np.ndarray:
    """Bilinear resize of a ``[D, s, s]`` binary mask to ``shape`` ``[D, H, W]``, threshold 0.5."""
    return resize_array(mask.astype(np.float32), tuple(shape), "linear") >= 0.5


def segment_liver_lesions(
    hu: np.ndarray, liver_votes: VotesFn, lesion_votes: VotesFn, liver_fuse: VotesFn, lesion_fuse: VotesFn,
    settings: PipelineSettings | None = None, *, keep_models: bool = False, progress: Callable[[str], None] | None = None,
) -> TwoStageResult:
    """Run both stages on one CT volume (module docstring).

    Args:
        hu: ``[D, H, W]`` CT in HU on the canonical grid.
        liver_votes, lesion_votes, liver_fuse, lesion_fuse: The networks and fusion layers.
        settings: Pre- and post-processing.
        keep_models: Also return every network's masks on the source grid (Tables 1 and 2).
        progress: Called with a short message at the start of each stage.

    Returns:
        :class:`TwoStageResult`.
    """
    s = settings or PipelineSettings()
    hu = np.asarray(hu, np.float32)
    if hu.ndim != 3 or min(hu.shape) < 1:
        raise InvalidInputError(f"need a [D, H, W] CT volume, got shape {hu.shape}", path="hu")
    say = progress or (lambda message: logger.info("%s", message))
    say(f"liver stage: {len(hu)} slices")
    raw = network_masks(liver_votes, liver_input(hu, s.size, s.hu_window), s.batch_size)
    post = filter_liver(raw, s)
    liver_small = filter_liver(fuse_masks(liver_fuse, post, s.batch_size), s)
    liver = upsample_mask(liver_small, hu.shape)
    result = TwoStageResult(liver, np.zeros_like(liver))
    if keep_models:
        result.liver_models_raw = [upsample_mask(raw[..., m], hu.shape) for m in range(raw.shape[-1])]
        result.liver_models_post = [upsample_mask(post[..., m], hu.shape) for m in range(post.shape[-1])]
    if not liver.any():
        say("lesion stage: no liver found, no lesions")
        result.lesion_models = [np.zeros_like(liver) for _ in range(raw.shape[-1])] if keep_models else []
        return result
    voi, crop = lesion_input(hu, liver, s.size, s.hu_window, s.clahe, s.clip_limit)
    say(f"lesion stage: {len(voi)} VOI slices")
    masks = filter_lesions(network_masks(lesion_votes, voi, s.batch_size), s)
    fused = filter_lesions(fuse_masks(lesion_fuse, masks, s.batch_size), s)
    back = lambda m: (crop.invert(m.astype(np.float32), mode="nearest") > 0.5) & liver
    result.lesion = back(fused)
    if keep_models:
        result.lesion_models = [back(masks[..., m]) for m in range(masks.shape[-1])]
    return result


def _numpy_function(fn) -> VotesFn:
    import tensorflow as tf

    return lambda x: fn(tf.constant(x, tf.float32)).numpy()


def load_fusion_bundle(path: str | os.PathLike) -> tuple[dict[str, VotesFn], PipelineSettings, dict]:
    """Load an exported seed-003 bundle (SavedModel with ``liver_votes``, ``lesion_votes``,
    ``liver_fuse``, ``lesion_fuse``) and the settings in its ``metadata.json``.

    Returns:
        ``(functions, settings, info)``: numpy-in/numpy-out callables by name, the pipeline settings
        and the bundle's metadata (networks, fusion weights).

    Raises:
        InvalidInputError: Not a bundle directory, or a SavedModel without the four functions.
    """
    import tensorflow as tf

    root = Path(path)
    if not (root / "saved_model.pb").is_file() or not (root / BUNDLE_SETTINGS).is_file():
        raise InvalidInputError(f"not a liver-lesion bundle (needs saved_model.pb and {BUNDLE_SETTINGS})", path=root)
    try:
        info = json.loads((root / BUNDLE_SETTINGS).read_text())
        settings = PipelineSettings(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in info["settings"].items()})
        loaded = tf.saved_model.load(str(root))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"cannot load the bundle: {exc}", path=root) from None
    functions = {}
    for name in ("liver_votes", "lesion_votes", "liver_fuse", "lesion_fuse"):
        fn = getattr(loaded, name, None)
        if fn is None:
            raise InvalidInputError(f"the SavedModel has no function {name!r}", path=root)
        functions[name] = _numpy_function(fn)
    functions["_module"] = loaded  # keeps the restored variables alive
    return functions, settings, info
