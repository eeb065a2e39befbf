"""One base for every run configuration: typed, frozen, checked before anything is written.

A config is a frozen dataclass deriving from :class:`Config`. It is built from a dict (a YAML
file, a ``config.json`` of an earlier run) with :meth:`Config.from_dict`, which refuses an
unknown key (naming it and listing the valid ones), turns lists into tuples and nested dicts
into nested configs; :meth:`Config.check` refuses a value of the wrong type or an invalid
choice, naming the field. :meth:`Config.to_dict` gives the JSON form saved with every output.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Toy(Config):
...     steps: int = 10
...     mode: str = "fast"
...     CHOICES = {"mode": lambda: ("fast", "slow")}
>>> Toy.from_dict({"steps": 3}).to_dict()
{'steps': 3, 'mode': 'fast'}
>>> Toy.from_dict({"stepz": 3})
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: unknown toy config key(s) ['stepz']: valid keys are mode, steps
>>> Toy(steps="3").check()
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: steps = '3' must be a whole number
>>> Toy(mode="quick").check()
Traceback (most recent call last):
dreamshift.errors.DreamshiftError: mode = 'quick': choose one of fast, slow
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from dreamshift.errors import DreamshiftError

C = TypeVar("C", bound="Config")


def _what(cls: type) -> str:
    """``LearnConfig`` -> ``learn``: how error messages name a config."""
    name = re.sub(r"Config$", "", cls.__name__) or cls.__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _check_value(name: str, value: Any, hint: Any) -> None:
    """Refuse ``value`` unless it fits the annotation ``hint`` (the types configs use)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                _check_value(name, value, option)
                return
            except DreamshiftError as exc:
                errors.append(str(exc))
        raise DreamshiftError(errors[0])
    if hint is Any:
        return
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            raise DreamshiftError(f"{name} = {value!r} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            for i, v in enumerate(value):
                _check_value(f"{name}[{i}]", v, args[0])
            return
        if len(value) != len(args):
            raise DreamshiftError(f"{name} = {list(value)!r} must hold {len(args)} values")
        for i, (v, a) in enumerate(zip(value, args, strict=True)):
            _check_value(f"{name}[{i}]", v, a)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise DreamshiftError(f"{name} = {value!r} must be true or false")
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise DreamshiftError(f"{name} = {value!r} must be a whole number")
    elif hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise DreamshiftError(f"{name} = {value!r} must be a number")
    elif hint is str:
        if not isinstance(value, str):
            raise DreamshiftError(f"{name} = {value!r} must be a string")
    elif isinstance(hint, type) and issubclass(hint, Config):
        if not isinstance(value, hint):
            raise DreamshiftError(f"{name} must be a mapping of {_what(hint)} fields")
        value.check(prefix=f"{name}.")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every stage config. Subclasses add fields, ``CHOICES`` (field -> a function
    returning its valid values, e.g. a registry's names) and ``validate`` (rules between
    fields); :meth:`check` runs the type checks, the choices, then ``validate``."""

    CHOICES: ClassVar[dict[str, Callable[[], Sequence[str]]]] = {}

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def normalise(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Hook: rewrite shorthand forms of a dict before it is read (a number for a range)."""
        return d

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any], where: str = "") -> C:
        """A config from a plain dict; unknown keys are refused, nested dicts become nested
        configs, lists become tuples. Values are checked by :meth:`check`, not here."""
        if not isinstance(d, dict):
            raise DreamshiftError(f"{where or _what(cls)} config must be a mapping of fields")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise DreamshiftError(
                f"unknown {_what(cls)} config key(s) {unknown}"
                + (f" in {where}" if where else "")
                + f": valid keys are {', '.join(sorted(names))}"
            )
        d = cls.normalise(dict(d))
        hints = cls._hints()
        kwargs = {}
        for key, value in d.items():
            hint = hints[key]
            nested = isinstance(hint, type) and issubclass(hint, Config)
            if nested and not isinstance(value, dict | hint):
                raise DreamshiftError(
                    f"{key} = {value!r}" + (f" in {where}" if where else "")
                    + f": give a mapping of {_what(hint)} fields"
                )  # fmt: skip
            kwargs[key] = _convert(value, hint, where)
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise DreamshiftError(f"{_what(cls)} config needs {missing}")
        return cls(**kwargs)

    @classmethod
    def from_yaml(
        cls: type[C], path: Path | None, preset: dict[str, Any] | None = None, **fields: Any
    ) -> C:
        """The config of a YAML file (None: the defaults) with ``fields`` set on top; a
        ``preset``'s fields come first, under both."""
        base = {**(preset or {}), **read_yaml(path)}
        base.update(fields)
        return cls.from_dict(base, str(path) if path else "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (tuples as lists), as saved with every output."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self: C, **given: Any) -> C:
        """A copy with ``given`` fields set; ``None`` values are ignored (flags not given)."""
        given = {k: v for k, v in given.items() if v is not None}
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise DreamshiftError(f"unknown {_what(type(self))} config key(s) {unknown}")
        return dataclasses.replace(self, **given)

    def check(self, prefix: str = "") -> None:
        """Refuse a wrong type or an invalid choice, naming the field; then ``validate``."""
        hints = self._hints()
        for f in dataclasses.fields(self):
            _check_value(prefix + f.name, getattr(self, f.name), hints[f.name])
        for name, valid in self.CHOICES.items():
            value, options = getattr(self, name), tuple(valid())
            if value not in options:
                raise DreamshiftError(
                    f"{prefix}{name} = {value!r}: choose one of {', '.join(map(str, options))}"
                )
        self.validate()

    def validate(self) -> None:
        """Hook: rules between fields, after the types and choices are known to be right."""


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Lists -> tuples and dicts -> nested configs where the annotation asks for them."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is not type(None):
                converted = _convert(value, option, where)
                if converted is not value:
                    return converted
        return value
    if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
        return hint.from_dict(value, where)
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_convert(v, inner, where) if inner is not None else v for v in value)
    return value


def read_yaml(path: Path | None) -> dict[str, Any]:
    """A YAML file of config fields (None: no file, no fields)."""
    import yaml

    if path is None:
        return {}
    try:
        base = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DreamshiftError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(base, dict):
        raise DreamshiftError(f"config {path} must hold a mapping of fields")
    return base
