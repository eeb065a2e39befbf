"""Argument types and small helpers shared by the command modules."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from dreamshift.config import Config, choices_of

C = TypeVar("C", bound=Config)
DEST = "config."  # generated flags' dests: config.FIELD, config.NESTED.FIELD


def floats(text: str) -> tuple[float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise argparse.ArgumentTypeError(f"expected MIN or MIN,MAX, got {text!r}")


def names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in names(text))


def numbers(text: str) -> tuple[float, ...]:
    return tuple(float(p) for p in names(text))


def pairs(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in names(text):
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"expected CLASS=BACKGROUND, got {item!r}")
        c, b = item.split("=", 1)
        out.append((c.strip(), b.strip()))
    return tuple(out)


def report_failed(num_failed: int, hint: str) -> int:
    """Exit status of a batch run: 1 (and a hint on stderr) when some samples failed."""
    if num_failed:
        print(f"{num_failed} samples failed: {hint}", file=sys.stderr)
        return 1
    return 0


def add_executor(p: argparse.ArgumentParser) -> None:
    """``--executor local|ray`` and ``--ray-address``; ``--workers`` is the number of worker
    processes (local) or Ray actors (default: one per CPU, or per GPU, of the cluster)."""
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local (processes of this machine) or ray (a Ray cluster, or one "
                   "started here; pip install 'dreamshift[ray]')")  # fmt: skip
    p.add_argument("--ray-address", help="a running Ray cluster, e.g. auto or 10.0.0.1:6379 "
                   "(implies --executor ray; default: start Ray on this machine)")  # fmt: skip
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (local: 1) or Ray actors (default: the cluster's "
                   "CPUs, or GPUs for a GPU model)")  # fmt: skip


def executor_of(args: argparse.Namespace, use_gpus: bool = False) -> Any:
    """The executor the flags ask for; None: the local default."""
    if args.executor == "local" and not args.ray_address:
        return None
    from dreamshift.engine.ray_executor import RayExecutor

    return RayExecutor(args.ray_address, actors=args.workers, use_gpus=use_gpus)


def add_config_flags(parser: Any, cls: type[Config], _path: str = "") -> None:
    """One flag per field of ``cls`` declared with ``dreamshift.config.option`` (and of its
    nested configs, flattened): its type and choices from the field's annotation and
    ``CHOICES``, its help from the field with the field's default appended. A flag not given
    is None, so :func:`config_from_args` keeps the ``--config`` file's value or the default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and issubclass(hint, Config):
            add_config_flags(parser, hint, f"{_path}{f.name}.")
            continue
        if "help" not in f.metadata:
            continue
        meta, dest = f.metadata, f"{DEST}{_path}{f.name}"
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        dashed = f.name.replace("_", "-")
        if hint is bool:  # --name and --no-name
            shown = "yes" if default else "no"
            parser.add_argument(meta["flag"] or f"--{dashed}", dest=dest, default=None,
                                action=argparse.BooleanOptionalAction,
                                help=_with_default(meta["help"], shown, ""))  # fmt: skip
            continue
        metavar = meta["metavar"] or f.name.upper()
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "metavar": metavar}
        valid = cls.CHOICES.get(f.name)
        if valid is not None and not callable(valid):
            kwargs["choices"] = [c for c in choices_of(valid) if c]  # "": the unset default
        parse, many = _parser_of(hint)
        if kwargs.get("choices"):
            kwargs["metavar"] = None  # argparse shows {a,b,c}
        if meta["repeat"]:
            kwargs.update(action="append", type=_scalar(hint))
        else:
            kwargs["type"] = parse
            if many and not meta["metavar"]:
                kwargs["metavar"] = f"{metavar},..."
        kwargs["help"] = _with_default(meta["help"], default, meta["shown"])
        parser.add_argument(meta["flag"] or f"--{dashed}", **kwargs)


def config_from_args(
    cls: type[C], args: argparse.Namespace, preset: dict[str, Any] | None = None, **fields: Any
) -> C:
    """The config the command line asks for: ``preset``, then the ``--config`` YAML file
    (when the command has one), then ``fields``, then every generated flag that was given."""
    base = cls.from_yaml(getattr(args, "config", None), preset, **fields)
    return _given(base, args, "")


def _given(cfg: C, args: argparse.Namespace, path: str) -> C:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Config):
            changes[f.name] = _given(value, args, f"{path}{f.name}.")
        else:
            given = getattr(args, f"{DEST}{path}{f.name}", None)
            changes[f.name] = tuple(given) if isinstance(given, list) else given
    return cfg.replace(**changes)


def _scalar(hint: Any) -> Callable[[str], Any]:
    """``int | None`` -> int; ``tuple[str, ...]`` -> str: what one value is parsed with."""
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return _scalar(options[0])
    if typing.get_origin(hint) is tuple:
        return _scalar(options[0])
    return hint if hint in (int, float) else str


def _parser_of(hint: Any) -> tuple[Callable[[str], Any], bool]:
    """How a flag's text becomes the field's value, and whether it is a comma-separated list."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not tuple:
        return _scalar(hint), False
    args = typing.get_args(hint)
    if args == (float, float):
        return floats, False
    if args == (tuple[str, str], Ellipsis):
        return pairs, True
    if args == (int, Ellipsis):
        return ints, True
    if args == (float, Ellipsis):
        return numbers, True
    if args == (str, Ellipsis):
        return names, True
    raise TypeError(f"no flag type for a config field of type {hint}")


def _with_default(help: str, default: Any, shown: str) -> str:
    """``help (default: VALUE)``; an empty or None default is left to ``shown`` (in words)."""
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    text = shown or ("" if default in (None, "") else str(default))
    return f"{help} (default: {text})".replace("%", "%%") if text else help.replace("%", "%%")
