"""Typed configs from plain data: YAML files and ``key=value`` strings into dataclass sections.

A :class:`Schema` is a root dataclass whose fields are sections (each a dataclass); every value
is checked and converted against its annotation (``int``, ``float``, ``str``, ``bool``,
``Literal[...]``, ``list[...]``, ``dict``, unions with None), and an unknown section or key is
an error that names the closest valid one. The training config (:mod:`hfstream.train.config`)
is one such schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from hfstream.errors import ConfigError

log = logging.getLogger("hfstream.config")


class Schema:
    """A config made of sections.

    Args:
        root: the root dataclass; its fields are the sections, in the order configs are written.
        validate: range and consistency checks run on every built config.
        example: a config file to name in hints (e.g. ``configs/tiny.yaml``).
    """

    def __init__(self, root: type, validate: Callable[[Any], None], example: str):
        self.root, self.validate, self.example = root, validate, example
        hints = typing.get_type_hints(root)
        self.sections: dict[str, type] = {f.name: hints[f.name] for f in dataclasses.fields(root)}

    # -- reading ----------------------------------------------------------------------------
    def load(self, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Any:
        """Read a YAML file (or start from the defaults) and apply ``section.key`` overrides.

        Raises:
            ConfigError: missing or unparsable file, unknown key, wrong type, out-of-range value.
        """
        raw: dict[str, Any] = {}
        if path is not None:
            raw = self.read_yaml(path)
            if not raw:
                log.warning("the config file %s is empty: every setting takes its default", path)
        config = self.from_dict(raw, source=str(path) if path is not None else "defaults")
        return self.apply_overrides(config, overrides or {})

    def read_yaml(self, path: str | Path) -> dict[str, Any]:
        """The mapping in a YAML file (an empty file is an empty mapping)."""
        path = Path(path)
        if not path.is_file():
            near = _near_files(path)
            raise ConfigError(f"config file {str(path)!r} does not exist",
                              f"did you mean {near}?" if near else "pass the path of a YAML file, "
                              f"e.g. {self.example}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{str(path)!r} is not valid YAML: {exc}",
                              "fix the syntax at the line shown (indentation, a missing ':')") from None
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{str(path)!r} holds a {type(raw).__name__}, not a mapping of sections",
                              f"write sections at the top level: {', '.join(self.sections)}")
        return raw

    def from_dict(self, raw: dict[str, Any], source: str = "config") -> Any:
        """Build a validated config from nested plain data (what YAML gives)."""
        sections: dict[str, Any] = {}
        for name, values in raw.items():
            if name not in self.sections:
                raise ConfigError(f"{source}: unknown section {name!r}", self._suggest_section(str(name)))
            if values is None:
                values = {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {name!r} must be a mapping, got "
                                  f"{type(values).__name__}",
                                  f"write its keys indented under '{name}:'")
            sections[name] = self._build_section(name, values, source)
        config = self.root(**sections)
        self.validate(config)
        return config

    def apply_overrides(self, config: Any, overrides: dict[str, Any]) -> Any:
        """A copy of ``config`` with ``{"section.key" or "key": value}`` applied and validated.

        String values are checked and converted like YAML values (``"3e-4"`` for a float,
        ``"null"`` for None, ``"[a, b]"`` for a list).
        """
        raw = self.to_dict(config)
        for key, value in overrides.items():
            section, name = self.resolve_key(key)
            expected = field_types(self.sections[section])[name]
            if isinstance(value, str) and expected is not str:
                parsed = _parse_scalar(value)
                # "sample-10BT" or "2024" for a `str | None` field stays the string it was.
                if not (_accepts_str(expected) and not isinstance(parsed, (list, type(None)))):
                    value = parsed
            raw[section][name] = value
        return self.from_dict(raw, source="override")

    def resolve_key(self, key: str) -> tuple[str, str]:
        """Turn ``section.key`` or a bare ``key`` into (section, key), or raise naming the closest."""
        if "." in key:
            section, name = key.split(".", 1)
            if section not in self.sections:
                raise ConfigError(f"unknown config section {section!r} in {key!r}",
                                  self._suggest_section(section))
            if name not in field_types(self.sections[section]):
                raise ConfigError(f"unknown config key {key!r}", self._suggest_key(section, name))
            return section, name
        owners = [s for s, cls in self.sections.items() if key in field_types(cls)]
        if len(owners) == 1:
            return owners[0], key
        if len(owners) > 1:
            raise ConfigError(f"config key {key!r} is ambiguous: it is in {', '.join(owners)}",
                              f"write it with its section, e.g. {owners[0]}.{key}")
        raise ConfigError(f"unknown config key {key!r}", self._suggest_key(None, key))

    # -- writing ----------------------------------------------------------------------------
    @staticmethod
    def to_dict(config: Any) -> dict[str, dict[str, Any]]:
        """Nested plain data (the YAML shape) of a config."""
        return dataclasses.asdict(config)

    def to_yaml(self, config: Any) -> str:
        """The config as YAML, sections in their natural order (for logs and checkpoints)."""
        return yaml.safe_dump(self.to_dict(config), sort_keys=False, allow_unicode=True,
                              default_flow_style=False, width=100)

    def all_keys(self) -> list[str]:
        """Every ``section.key`` a config accepts."""
        return [f"{s}.{k}" for s, cls in self.sections.items() for k in field_types(cls)]

    # -- helpers ----------------------------------------------------------------------------
    def _build_section(self, section: str, values: dict[str, Any], source: str) -> Any:
        cls = self.sections[section]
        types_ = field_types(cls)
        kwargs = {}
        for key, value in values.items():
            if key not in types_:
                raise ConfigError(f"{source}: unknown key {section}.{key}", self._suggest_key(section, str(key)))
            kwargs[key] = _coerce(f"{section}.{key}", value, types_[key])
        return cls(**kwargs)

    def _suggest_section(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self.sections), n=1)
        if close:
            return f"did you mean {close[0]!r}? sections are: {', '.join(self.sections)}"
        owners = [s for s, cls in self.sections.items() if name in field_types(cls)]
        if owners:
            return f"{name!r} is a key of section {owners[0]!r}: write it under '{owners[0]}:'"
        return f"sections are: {', '.join(self.sections)}"

    def _suggest_key(self, section: str | None, name: str) -> str:
        keys = self.all_keys()
        if section is not None:
            close = difflib.get_close_matches(name, list(field_types(self.sections[section])), n=1, cutoff=0.6)
            if close:
                return f"did you mean {section}.{close[0]}?"
        elsewhere = [k for k in keys if k.split(".", 1)[1] == name]
        if elsewhere:
            return f"{name!r} belongs to another section: did you mean {elsewhere[0]}?"
        close = difflib.get_close_matches(name, [k.split(".", 1)[1] for k in keys], n=1, cutoff=0.6)
        if close:
            full = next(k for k in keys if k.endswith("." + close[0]))
            return f"did you mean {full}?"
        valid = ", ".join(field_types(self.sections[section])) if section else ", ".join(keys)
        return f"valid keys: {valid}"


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their resolved annotations, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, expected: Any) -> Any:
    """``value`` converted to the annotated type, or a ConfigError naming ``key``."""
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if _is_union(expected):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[-1] if len(errors) == 1 else ConfigError(
            f"{key} must be {_describe(expected)}, got {value!r} ({type(value).__name__})",
            f"set {key} to {_describe(expected)}")
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        close = difflib.get_close_matches(str(value), [str(a) for a in args if a is not None], n=1)
        raise ConfigError(f"{key}={value!r} is not one of {choices}",
                          f"did you mean {close[0]!r}?" if close else f"choose one of {choices}")
    if origin is dict or expected is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key} must be a mapping, got {value!r} ({type(value).__name__})",
                          f"write it as a YAML mapping, e.g. {{dataset: data.jsonl, proportion: 0.5}}")
    if origin is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r} ({type(value).__name__})",
                              f"write it as a YAML list, e.g. {key.split('.')[-1]}: [a, b]")
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r} ({type(value).__name__})",
                          f"set {key}: true or {key}: false")
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _as_number(value)
        if number is not None and float(number).is_integer():
            return int(number)
        raise ConfigError(f"{key} must be an integer, got {value!r} ({type(value).__name__})",
                          f"set {key} to a whole number")
    if expected is float:
        number = _as_number(value)
        if number is not None:
            return float(number)
        raise ConfigError(f"{key} must be a number, got {value!r} ({type(value).__name__})",
                          f"set {key} to a number such as 3e-4")
    if expected is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r} ({type(value).__name__})",
                          f"quote the value of {key}")
    raise AssertionError(f"unsupported annotation {expected!r} for {key}")


def _accepts_str(annotation: Any) -> bool:
    return annotation is str or (_is_union(annotation) and str in typing.get_args(annotation))


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is Union or origin is types.UnionType


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _describe(expected: Any) -> str:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if _is_union(expected):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return "a list of " + {str: "strings", int: "integers"}.get(args[0], str(args[0]))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false",
            type(None): "null"}.get(expected, str(expected))


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _near_files(path: Path) -> str | None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return None
    names = [p.name for p in parent.iterdir() if p.suffix in (".yaml", ".yml")]
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.5)
    return str(parent / close[0]) if close else None
