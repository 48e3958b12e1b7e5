"""Every model builder reachable by name: ``build("mobilenetv2_2d", variant="default")``.

Builder modules register themselves with :func:`register`; :func:`build` imports every module
under ``tfmedseg.models.segmentation`` and ``tfmedseg.models.detection`` on first use, so a new
builder needs no edit here.

Example:
    >>> from tfmedseg.models import registry
    >>> sorted(registry.available())[:1]  # doctest: +SKIP
    ['dsts_3d']
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

from tfmedseg.errors import ModelBuildError

__all__ = ["register", "build", "available", "get_builder"]

_BUILDERS: dict[str, Callable[..., Any]] = {}
_PACKAGES = ("tfmedseg.models.segmentation", "tfmedseg.models.detection")
_loaded = False


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a builder (a function or ``keras.Model`` subclass) under ``name``."""

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package_name}.{info.name}")
    _loaded = True


def available() -> list[str]:
    """Sorted names of all registered builders."""
    _load_all()
    return sorted(_BUILDERS)


def get_builder(name: str) -> Callable[..., Any]:
    """The builder registered as ``name``.

    Raises:
        ModelBuildError: Unknown name; the message lists the registered names.
    """
    _load_all()
    if name not in _BUILDERS:
        raise ModelBuildError(f"unknown model name; registered models: {sorted(_BUILDERS)}", path=name)
    return _BUILDERS[name]


def build(name: str, **config: Any) -> Any:
    """Build the registered model ``name`` with keyword ``config``."""
    return get_builder(name)(**config)
