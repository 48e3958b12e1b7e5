"""Export seed 003's trained two-stage fusion system as one SavedModel bundle.

The bundle holds the eight networks (four per stage) and the two fusion layers, as four functions
(``tf.saved_model.load(path).liver_votes(x)`` etc.):

* ``liver_votes`` / ``lesion_votes``: ``x`` float32 ``[B, S, S, 1]`` (windowed to [-1, 1]) ->
  ``[B, S, S, M]`` logits, one channel per network in ``networks`` order;
* ``liver_fuse`` / ``lesion_fuse``: ``votes`` float32 ``[B, S, S, M]`` binary masks -> ``[B, S, S, 1]``
  fusion logits (foreground where ``>= 0``).

``metadata.json`` beside ``saved_model.pb`` holds the pre/post-processing settings
(:class:`tfmedseg.inference.liver_lesion.PipelineSettings`), the network names and the learned fusion
weights; :func:`tfmedseg.inference.liver_lesion.load_fusion_bundle` reads it back, so the application
runs without the training code or the model builders.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf

from tfmedseg.errors import ExportError
from tfmedseg.export.savedmodel import _write_export
from tfmedseg.inference.liver_lesion import PipelineSettings

__all__ = ["FusionBundleModule", "export_fusion_bundle"]


class FusionBundleModule(tf.Module):
    """The four functions of the bundle (module docstring)."""

    def __init__(self, liver_models: Sequence[Any], lesion_models: Sequence[Any], liver_fusion: Any, lesion_fusion: Any,
                 size: int):
        super().__init__(name="tfmedseg_liver_lesion_fusion")
        self.liver_models = list(liver_models)
        self.lesion_models = list(lesion_models)
        self.liver_fusion = liver_fusion
        self.lesion_fusion = lesion_fusion
        m = len(self.liver_models)
        image = tf.TensorSpec([None, size, size, 1], tf.float32, name="x")
        votes = tf.TensorSpec([None, size, size, m], tf.float32, name="votes")

        def stack(models):
            def run(x):
                return tf.concat([tf.cast(net(x, training=False), tf.float32)[..., :1] for net in models], axis=-1)

            return run

        self.liver_votes = tf.function(stack(self.liver_models), input_signature=[image])
        self.lesion_votes = tf.function(stack(self.lesion_models), input_signature=[image])
        self.liver_fuse = tf.function(lambda v: tf.cast(self.liver_fusion(v, training=False), tf.float32), input_signature=[votes])
        self.lesion_fuse = tf.function(lambda v: tf.cast(self.lesion_fusion(v, training=False), tf.float32), input_signature=[votes])

    def signatures(self) -> dict[str, Any]:
        return {name: getattr(self, name).get_concrete_function()
                for name in ("liver_votes", "lesion_votes", "liver_fuse", "lesion_fuse")}


def export_fusion_bundle(
    liver_models: Sequence[Any], lesion_models: Sequence[Any], liver_fusion: Any, lesion_fusion: Any,
    export_dir: str | os.PathLike, *, settings: PipelineSettings, networks: Sequence[str],
    fusion_weights: dict[str, list[float]] | None = None, metadata: dict[str, Any] | None = None,
    model_name: str = "liver_lesion_fusion", overwrite: bool = False,
) -> Path:
    """Write the bundle to ``export_dir`` (``<root>/<name>/<version>``, atomically).

    Raises:
        ExportError: Unequal network lists, tracing or writing failures, an existing version.
    """
    if len(liver_models) != len(lesion_models) or len(networks) != len(liver_models) or not networks:
        raise ExportError(f"need as many liver and lesion networks as names, got {len(liver_models)}, "
                          f"{len(lesion_models)}, {len(networks)}", path=model_name)
    try:
        module = FusionBundleModule(liver_models, lesion_models, liver_fusion, lesion_fusion, settings.size)
        signatures = module.signatures()
    except Exception as exc:
        raise ExportError(f"cannot trace the fusion bundle: {type(exc).__name__}: {exc}", path=model_name) from exc
    pipeline = {"settings": dataclasses.asdict(settings), "networks": list(networks),
                "fusion_weights": fusion_weights or {}, "labels": ["background", "liver", "lesion"]}
    return _write_export(module, signatures, Path(export_dir), {"model_name": model_name, **(metadata or {}), **pipeline},
                         overwrite, model_name)
