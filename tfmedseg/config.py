"""Experiment configuration: plain dataclasses, YAML overrides, ``--set key=value`` overrides.

A config is a (possibly nested) dataclass whose defaults are the seed's values. A YAML file
overrides any subset of its fields; ``--set a.b=3`` overrides one field, the value parsed as YAML
(``3`` -> int, ``1e-3`` -> float, ``[1, 2]`` -> list, ``true`` -> bool). An unknown key is an
error naming the key and the file it came from. Every run writes its resolved config
(:func:`save_config`) next to its outputs, and :func:`config_hash` identifies it.

Example:
    >>> import dataclasses
    >>> @dataclasses.dataclass
    ... class Train:
    ...     lr: float = 1e-3
    ...     epochs: int = 100
    >>> @dataclasses.dataclass
    ... class Exp:
    ...     train: Train = dataclasses.field(default_factory=Train)
    >>> apply_overrides(Exp(), ["train.lr=0.01"]).train.lr
    0.01
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tfmedseg.errors import ConfigError

__all__ = ["from_dict", "to_dict", "load_config", "apply_overrides", "save_config", "config_hash"]

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # pragma: no cover - unresolved forward references
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _dataclass_type(annotation: Any) -> type | None:
    """The dataclass inside ``annotation`` (``Foo``, ``Foo | None``, ``Optional[Foo]``), else None."""
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _dataclass_type(arg)
            if found is not None:
                return found
    return None


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Light type checking: ints become floats where a float is declared; tuples from lists."""
    if value is None:
        return None
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            pass
    if annotation in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"expected {annotation.__name__}, got {value!r} (in {source})", path=key)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"expected true/false, got {value!r} (in {source})", path=key)
    if annotation is str and not isinstance(value, str):
        raise ConfigError(f"expected a string, got {value!r} (in {source})", path=key)
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, *, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys.

    Args:
        cls: A dataclass type whose defaults are used for missing keys.
        data: Nested mapping of overrides.
        source: Where ``data`` came from (a YAML path), named in errors.
        prefix: Dotted key prefix of ``cls`` inside the root config, for error messages.

    Raises:
        ConfigError: Unknown key, or a value of the wrong type; the message names the dotted key.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping, got {type(data).__name__} (in {source})", path=prefix or "<root>")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key (in {source}); allowed keys here: {sorted(names)}", path=dotted
            )
        sub = _dataclass_type(hints.get(key))
        if sub is not None and isinstance(value, dict):
            kwargs[key] = from_dict(sub, value, source=source, prefix=f"{dotted}.")
        else:
            kwargs[key] = _coerce(value, hints.get(key), dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value (in {source}): {exc}", path=prefix or cls.__name__) from exc


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists (tuples become lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError("an override must look like key=value (for example train.lr=1e-4)", path=item)
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError("empty key in override", path=item)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {raw!r}: {exc}", path=key) from exc
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" as a string; accept scientific notation as float.
        try:
            value = float(value) if any(c in value.lower() for c in "e.") and value.strip() else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(config: T, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """A new config with ``key.sub=value`` overrides applied.

    Raises:
        ConfigError: Unknown key, or a value of the wrong type.
    """
    if not overrides:
        return config
    update: dict[str, Any] = {}
    for item in overrides:
        keys, value = _parse_override(item)
        node = update
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    data = _merge(to_dict(config), update)
    return from_dict(type(config), data, source="--set")


def _yaml_load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError("config file does not exist", path=path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", path=path)
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``overrides``.

    Raises:
        ConfigError: Missing or malformed file, unknown key (naming the key and the file).
    """
    config = cls()
    if path is not None:
        path = Path(path)
        config = from_dict(cls, _merge(to_dict(config), _yaml_load(path)), source=str(path))
    return apply_overrides(config, list(overrides))


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (created atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.replace(tmp, path)
    return path


def config_hash(config: Any) -> str:
    """A short stable hash of the resolved config (sha256 of its sorted JSON, 12 hex digits)."""
    text = json.dumps(to_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
