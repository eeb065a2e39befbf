"""Paths in what travels: a record written on one machine (``results.jsonl``, a run folder's
``config.json``) names the datasets, run folders and files it used relative to its own folder,
as ``./...`` or ``../...``, never by this machine's absolute paths; read back, they are found
again from wherever the folder now lies. Content hashes beside them say what they named."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATH_KEYS = ("dataset", "model", "model_id", "sweep", "source", "spurious_from", "predictions",
             "weights_file")  # fmt: skip
NESTED_DATASETS = ("in_distribution", "sources")  # a dict, or dicts, whose "dataset" is a path
CONFIG_PATH_KEYS = ("train", "features_from", "recombine", "model", "label_map", "source",
                    "prior", "sfsl", "spurious", "prompts", "adapters", "foregrounds",
                    "backgrounds", "class_names")  # fmt: skip


def portable_record(record: dict[str, Any], base: str | Path) -> dict[str, Any]:
    """``record`` with its absolute paths made relative to the folder ``base``.

    >>> portable_record({"dataset": "/d/runs/paste", "model": "timm:r50@/d/w.pth",
    ...                  "split": "test", "sources": [{"dataset": "/d/gen"}],
    ...                  "config": {"train": ["/d/real:train@0.8"], "seed": 0}}, "/d/runs/audit")
    ... # doctest: +NORMALIZE_WHITESPACE
    {'dataset': '../paste', 'model': 'timm:r50@../../w.pth', 'split': 'test',
     'sources': [{'dataset': '../../gen'}],
     'config': {'train': ['../../real:train@0.8'], 'seed': 0}}
    """
    return _map_paths(record, lambda value: _relative(value, Path(base)))


def portable_config(config: dict[str, Any], base: str | Path) -> dict[str, Any]:
    """A run config's :data:`CONFIG_PATH_KEYS` made relative to the folder ``base``.

    >>> portable_config({"source": "/d/runs/paste", "adapters": ["/d/lora:0.8"],
    ...                  "class_names": "imagenet-1k"}, "/d/runs")
    {'source': './paste', 'adapters': ['../lora:0.8'], 'class_names': 'imagenet-1k'}
    """
    return _map_config(config, lambda value: _relative(value, Path(base)))


def _map_config(config: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    return {k: _map_value(v, fn) if k in CONFIG_PATH_KEYS else v for k, v in config.items()}


def located_record(record: dict[str, Any], base: str | Path) -> dict[str, Any]:
    """``record`` with the paths :func:`portable_record` made relative found again from the
    folder ``base`` (absolute paths, as older records hold, stay as they are).

    >>> located_record({"dataset": "../paste", "model": "world-cnn"}, "/d/runs/audit")
    {'dataset': '/d/runs/paste', 'model': 'world-cnn'}
    """
    return _map_paths(record, lambda value: _located(value, Path(base)))


def _relative(value: str, base: Path) -> str:
    if not os.path.isabs(value):
        return value
    rel = os.path.relpath(value, base.resolve())
    return rel if rel.startswith("..") else f"./{rel}"


def _located(value: str, base: Path) -> str:
    if value.startswith(("./", "../")):
        return os.path.normpath(base.resolve() / value)
    return value


def _map_value(value: Any, fn: Callable[[str], str]) -> Any:
    """``fn`` applied to the path in ``value``: a path (``/...``, ``./...``, ``../...``) with
    an optional ``:SPLIT`` and ``@WEIGHT`` after it, or the FILE of ``KIND:NAME@FILE``; a
    list, each item; anything else as it is."""
    if isinstance(value, (list, tuple)):
        return [_map_value(v, fn) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith(("/", "./", "../")):
        path, rest = re.match(r"([^:@]*)(.*)", value).groups()  # type: ignore[union-attr]
        return fn(path) + rest
    head, at, file = value.partition("@")
    if at and ":" in head and file.startswith(("/", "./", "../")):
        return f"{head}@{fn(file)}"
    return value


def _map_paths(record: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """``record`` with ``fn`` applied to each path it holds: the :data:`PATH_KEYS` (and every
    ``predictions_<split>``), the ``dataset`` of :data:`NESTED_DATASETS`, the models of an
    effective-robustness fit, and a run config's :data:`CONFIG_PATH_KEYS`."""
    out = dict(record)
    for key, value in record.items():
        if key in PATH_KEYS or key.startswith("predictions_"):
            out[key] = _map_value(value, fn)
        elif key in NESTED_DATASETS and isinstance(value, (dict, list)):
            items = value if isinstance(value, list) else [value]
            mapped = [{**v, "dataset": _map_value(v.get("dataset"), fn)}
                      if isinstance(v, dict) else v for v in items]  # fmt: skip
            out[key] = mapped if isinstance(value, list) else mapped[0]
        elif key == "effective_robustness" and isinstance(value, dict):
            out[key] = {**value, "models": _map_value(value.get("models"), fn)}
        elif key == "config" and isinstance(value, dict):
            out[key] = _map_config(value, fn)
    return out
