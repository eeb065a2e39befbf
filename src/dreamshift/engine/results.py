"""``results.jsonl``: one JSON record per line, appended under an exclusive file lock so that
runs writing to the same file at once (a sweep over several processes, DomainBed-style)
never interleave their lines.

Records travel (to a colleague, a paper's supplement, another node): the paths they hold
(datasets, run folders, prediction files; :data:`PATH_KEYS`) are written relative to the
records file's folder, as ``./...`` or ``../...``, beside the content hashes that identify
what they name, and read back as paths on this machine (:func:`read_records`).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "results.jsonl"
>>> append_record(path, {"run": "a", "acc": 0.5})
>>> append_records(path, [{"run": "b"}, {"run": "c"}])
>>> [r["run"] for r in read_records(path)]
['a', 'b', 'c']
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dreamshift.errors import DreamshiftError

RESULTS = "results.jsonl"
PATH_KEYS = ("dataset", "model", "model_id", "sweep", "source", "predictions", "weights_file")
NESTED_DATASETS = ("in_distribution", "sources")  # a dict, or dicts, whose "dataset" is a path
CONFIG_PATH_KEYS = ("train", "features_from", "recombine", "model", "label_map", "source",
                    "prior", "sfsl", "spurious", "prompts", "adapters")  # fmt: skip


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
            out[key] = {k: _map_value(v, fn) if k in CONFIG_PATH_KEYS else v
                        for k, v in value.items()}  # fmt: skip
    return out


def append_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append ``records`` as one locked, flushed write (whole lines, never interleaved), their
    paths relative to the file's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(portable_record(r, path.parent)) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_record(path: Path, record: dict[str, Any]) -> None:
    append_records(path, [record])


def read_records(path: str | Path, what: str = "`dreamshift audit`") -> list[dict[str, Any]]:
    """Every record of a ``results.jsonl``, its paths found from the file's folder; a missing
    file or a line that is not JSON is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DreamshiftError(f"no results file {path}: run {what} first")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DreamshiftError(f"{path} line {n} is not JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise DreamshiftError(f"{path} line {n} is not a record (a JSON object)")
            records.append(located_record(record, path.parent))
    return records
