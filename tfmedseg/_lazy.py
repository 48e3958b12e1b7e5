"""Lazy package attributes: a package's names load their submodule on first use (PEP 562), so
importing the package (``tfmedseg.data``, ``tfmedseg.inference``, ``tfmedseg.training``) needs no
TensorFlow, and ``--help`` of a command that imports it stays fast."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping


def lazy_attributes(package: str, namespace: MutableMapping[str, Any],
                    table: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose ``table`` maps each public name to its submodule.

    Args:
        package: The package's ``__name__`` (for the AttributeError message).
        namespace: The package's ``globals()``; a loaded name is cached there.
        table: ``{name: "tfmedseg.pkg.submodule"}``.

    Example (in a package ``__init__``)::

        __getattr__, __dir__ = lazy_attributes(__name__, globals(), {"Trainer": "tfmedseg.training.trainer"})
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
