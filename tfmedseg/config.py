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
import math
import os
import types
import typing
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml

from tfmedseg.errors import ConfigError
from tfmedseg.staging import atomic_file

__all__ = ["from_dict", "to_dict", "load_config", "apply_overrides", "save_config", "config_hash", "check_range",
           "check_choice", "attribute_config", "yaml_load_strict", "StrictYamlLoader"]

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


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(inner type, allows None)`` of ``X | None`` / ``Optional[X]``; other annotations unchanged."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, annotation in (None, Any, type(None))


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Light type checking: ints become floats where a float is declared; tuples from lists;
    integral floats (``64.0``) become ints where an int is declared, fractional ones are refused;
    ``null`` only where the field allows None."""
    annotation, nullable = _optional(annotation)
    if value is None:
        if not nullable and annotation in (int, float, bool, str):
            raise ConfigError(f"may not be null (expected {annotation.__name__}) (in {source})", path=key)
        return None
    if annotation is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"expected an integer, got {value!r} (in {source})", path=key)
        return int(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"expected a finite number, got {value!r} (in {source})", path=key)
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
        elif sub is not None and not isinstance(value, sub) and not (value is None and _optional(hints.get(key))[1]):
            raise ConfigError(f"expected a mapping of {sub.__name__} fields, got {value!r:.60} (in {source})", path=dotted)
        else:
            kwargs[key] = _coerce(value, hints.get(key), dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # a check of the dataclass itself (``__post_init__``) names its own field: name it from the root
        # (``liver.batch_size``, not ``batch_size``) and say where the value came from, as the type checks do
        if exc.path is None:
            key = prefix.rstrip(".") or None
        else:
            key = exc.path if exc.path.startswith(prefix) else prefix + exc.path
        reason = exc.reason if f"(in {source})" in exc.reason else f"{exc.reason} (in {source})"
        if (key, reason) == (exc.path, exc.reason):
            raise
        raise ConfigError(reason, path=key) from exc
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
        value = yaml_load_strict(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {raw!r}: {' '.join(str(exc).split())}", path=key) from exc
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


#: Largest YAML config read (bytes); configs are a few kB.
MAX_CONFIG_BYTES = 1 << 20


#: Most YAML nodes a config may expand to (aliases counted at every use): a 600-byte alias bomb
#: expands to ~10**9 nodes; a real config has a few hundred.
MAX_YAML_NODES = 100_000


class StrictYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that caps the expanded size (aliases ``*ref`` counted at every use, so a
    few hundred bytes cannot expand to GBs), refuses recursive aliases, and refuses duplicate mapping
    keys (the later one silently won)."""

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(n, active: frozenset) -> int:
            if id(n) in active:
                raise yaml.constructor.ConstructorError(None, None, "recursive YAML alias", n.start_mark)
            if id(n) not in sizes:
                if isinstance(n, yaml.SequenceNode):
                    children = n.value
                elif isinstance(n, yaml.MappingNode):
                    children = [c for pair in n.value for c in pair]
                else:
                    children = []
                total = 1
                for child in children:
                    total += expanded(child, active | {id(n)})
                    if total > MAX_YAML_NODES:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"expands to more than {MAX_YAML_NODES} nodes (YAML aliases?); not a config", n.start_mark)
                sizes[id(n)] = total
            return sizes[id(n)]

        if node is not None:
            expanded(node, frozenset())
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise yaml.constructor.ConstructorError(None, None, "mapping keys must be scalars", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_load_strict(text: str) -> Any:
    """Parse YAML with :class:`StrictYamlLoader` (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError("config file does not exist", path=path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file is {size} bytes, more than {MAX_CONFIG_BYTES}; not a config", path=path)
        raw = path.read_bytes()
        if b"\0" in raw:
            raise ConfigError("binary file, not a YAML config", path=path)
        data = yaml_load_strict(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start}); not a YAML config", path=path) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config: {exc.strerror or exc}", path=path) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {' '.join(str(exc).split())}", path=path) from exc
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
    """Write the resolved config as YAML, atomically: staged under the visible
    ``<name>.tfmedseg-partial-...`` name and renamed (:func:`tfmedseg.staging.atomic_file`, like
    every output; the hidden ``.<name>.tmp`` staging of older versions is removed)."""
    path = Path(path)
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    with atomic_file(path, path.suffix) as tmp:
        Path(tmp).write_text(text)
    legacy = path.with_name(f".{path.name}.tmp")  # tfmedseg before 2026-12-07 staged here
    if legacy.is_file() and not legacy.is_symlink():
        legacy.unlink()
    return path


def check_range(value: Any, key: str, low: float | None = None, high: float | None = None, *, integer: bool = False) -> None:
    """Refuse a config number outside ``[low, high]`` (or not an integer when ``integer``).

    Raises:
        ConfigError: Naming ``key`` and the allowed range.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise ConfigError(f"expected {'an integer' if integer else 'a number'}, got {value!r}", path=key)
    if not math.isfinite(float(value)) or (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"must lie in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}], got {value!r}", path=key)


def check_choice(value: Any, key: str, allowed: Sequence[Any]) -> None:
    """Refuse a config value that is not one of ``allowed``.

    Raises:
        ConfigError: Naming ``key`` (its last dotted part in the message), the value and the allowed ones.
    """
    if value not in allowed:
        raise ConfigError(f"unknown {key.rsplit('.', 1)[-1]} {value!r}; allowed: {tuple(allowed)}", path=key)


def attribute_config(base: Mapping[str, Any], obj: Any, *names: str, **values: Any) -> dict[str, Any]:
    """A Keras ``get_config``: ``base`` (the parent's config) with ``obj``'s attributes ``names`` and
    the converted ``values`` (lists for tuples, serialised objects) added.

    Example:
        >>> class Scale:
        ...     factor, offset = 2.0, 1.0
        >>> attribute_config({"name": "scale"}, Scale(), "factor", offset=[1.0])
        {'name': 'scale', 'factor': 2.0, 'offset': [1.0]}
    """
    return {**base, **{name: getattr(obj, name) for name in names}, **values}


def config_hash(config: Any) -> str:
    """A short stable hash of the resolved config (sha256 of its sorted JSON, 12 hex digits)."""
    text = json.dumps(to_dict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
