"""Copy keras.applications weights into a same-named backbone with a different input depth."""

from __future__ import annotations

import os

import keras
import numpy as np

from tfmedseg.errors import InvalidInputError, ModelBuildError

__all__ = ["copy_application_weights", "check_weights_path", "application_input", "application_model"]


def copy_application_weights(model: keras.Model, reference: keras.Model, path: str | os.PathLike) -> int:
    """Copy every same-named layer's weights from ``reference`` into ``model``.

    The first convolution's kernel is summed over its input channels when ``model`` has fewer
    input channels (an RGB ImageNet kernel applied to a grey image replicated to RGB gives the
    same response as the summed kernel on the grey image).

    Args:
        model: Our backbone (layer names follow keras.applications).
        reference: The keras.applications model built with ``weights=path``.
        path: The weights file, for error messages.

    Returns:
        Number of layers copied.

    Raises:
        ModelBuildError: A same-named layer has weights of an incompatible shape (for example a
            width-reduced backbone).
    """
    copied = 0
    ref_layers = {layer.name: layer for layer in reference.layers}
    for layer in model.layers:
        ref = ref_layers.get(layer.name)
        if ref is None or not ref.get_weights():
            continue
        values = ref.get_weights()
        target = layer.get_weights()
        if len(values) != len(target):
            raise ModelBuildError(f"layer {layer.name!r} has {len(target)} weights, file has {len(values)}", path=os.fspath(path))
        new = []
        for v, t in zip(values, target):
            if v.shape != t.shape and v.ndim == 4 and v.shape[:2] + v.shape[3:] == t.shape[:2] + t.shape[3:]:
                v = np.sum(v, axis=2, keepdims=True) if t.shape[2] == 1 else v[:, :, : t.shape[2]]
            if v.shape != t.shape:
                raise ModelBuildError(
                    f"layer {layer.name!r}: weight shape {t.shape} does not match {v.shape} in the file "
                    "(only the default filter widths can load keras.applications weights)",
                    path=os.fspath(path),
                )
            new.append(v)
        layer.set_weights(new)
        copied += 1
    if copied == 0:
        raise ModelBuildError("no layer of the weights file matches the backbone", path=os.fspath(path))
    return copied


def check_weights_path(weights) -> None:
    """``None`` or an existing local file; "imagenet" is refused (no downloads)."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise InvalidInputError(
            "weights must be None (train from scratch) or the path of a local keras.applications "
            "weights file (no download)",
            path=os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else repr(weights),
        )


def resolve_application_weights(value, cache_file: str, option: str) -> str | None:
    """A config's ``backbone_weights`` value -> a local weights file or None.

    Args:
        value: None / ``"none"`` / ``""`` (from scratch), ``"imagenet"`` (the keras.applications
            ImageNet file, which must already sit in the Keras cache ``$KERAS_HOME/models``: tfmedseg
            never downloads), or the path of a local weights file.
        cache_file: File name of the keras.applications weights in the Keras cache.
        option: The config key, named in errors (``ssd.backbone_weights``).

    Returns:
        The weights file path, or None.

    Raises:
        ConfigError: ``imagenet`` without the cached file, or a path that is not a file.
    """
    from tfmedseg.errors import ConfigError

    if value is None or str(value).strip().lower() in ("", "none", "null", "scratch"):
        return None
    if str(value).lower() == "imagenet":
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        cached = os.path.join(home, "models", cache_file)
        if os.path.isfile(cached):
            return cached
        raise ConfigError(
            f"'imagenet' needs the ImageNet weights file {cached} and tfmedseg runs offline (no download): "
            f"set {option} to a local keras.applications weights file, or to none to train from scratch",
            path=option,
        )
    if not os.path.isfile(os.fspath(value)):
        raise ConfigError(f"weights file {value!r} does not exist (use imagenet, a local file or none)", path=option)
    return os.fspath(value)


def application_input(input_shape, weights) -> keras.KerasTensor:
    """The ``image`` input of a keras.applications-compatible backbone: ``input_shape`` must be
    ``(H, W, C)`` and ``weights`` None or an existing file (checked before anything is built)."""
    if len(input_shape) != 3:
        raise ModelBuildError(f"input_shape must be (H, W, C), got {tuple(input_shape)}", path="input_shape")
    check_weights_path(weights)
    return keras.Input(tuple(input_shape), name="image")


def application_model(inputs, outputs: dict, name: str, application, weights) -> keras.Model:
    """``keras.Model(inputs, outputs)``, initialised from the keras.applications ``application``
    (e.g. ``keras.applications.VGG16``) built with the local ``weights`` file when one is given."""
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        reference = application(include_top=False, weights=weights, input_shape=(None, None, 3))
        copy_application_weights(model, reference, weights)
    return model
