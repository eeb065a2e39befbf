"""The verification table beside a dataset's manifest: one row per sample, by ``sample_id``.

``dreamshift verify`` writes automatic scores into it and ``dreamshift review export`` the
votes of people and a ``verified`` column; the dataset's images and manifest rows are never
rewritten. Each writer replaces its own columns and keeps everyone else's, and the file is
replaced whole (written beside it, then renamed), so a crash leaves the previous table.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> update_columns(root, ["a", "b"], {"verified": [True, False]})
>>> read_table(root).column("verified").to_pylist()
[True, False]
>>> sorted(verified_ids(root))
['a']
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dreamshift.errors import DreamshiftError

VERIFICATION = "verification.parquet"
VERIFIED = "verified"  # bool: passed the rule `review export` applied (null: never reviewed)


def table_path(root: str | Path) -> Path:
    return Path(root) / VERIFICATION


def read_table(root: str | Path) -> pa.Table | None:
    """The verification table of dataset ``root``, or None when nothing verified it yet."""
    path = table_path(root)
    if not path.is_file():
        return None
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DreamshiftError(
            f"cannot read {path} ({exc}): delete it and run `dreamshift verify` / "
            "`dreamshift review export` again"
        ) from exc


def update_columns(
    root: str | Path,
    sample_ids: Sequence[str],
    columns: Mapping[str, Sequence[Any] | pa.Array],
) -> None:
    """Set ``columns`` (values aligned with ``sample_ids``) for those samples in the table of
    ``root``; other samples keep their values (a rerun on one split keeps the others'), other
    columns stay as they are. Writers take turns (a lock file beside the table)."""
    path = table_path(root)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = read_table(root)
        ids = list(old.column("sample_id").to_pylist()) if old is not None else []
        known = set(ids)
        ids += [s for s in sample_ids if s not in known]
        data: dict[str, list[Any]] = {}
        if old is not None:
            for name in old.column_names:
                if name != "sample_id":
                    data[name] = old.column(name).to_pylist() + [None] * (len(ids) - old.num_rows)
        row = {s: i for i, s in enumerate(ids)}
        for name, values in columns.items():
            values = values.to_pylist() if isinstance(values, pa.Array) else list(values)
            if len(values) != len(sample_ids):
                raise ValueError(
                    f"column {name}: {len(values)} values for {len(sample_ids)} samples"
                )
            cells = data.setdefault(name, [None] * len(ids))
            for s, v in zip(sample_ids, values, strict=True):
                cells[row[s]] = v
        table = pa.table({"sample_id": pa.array(ids, pa.string()),
                          **{n: pa.array(v) for n, v in data.items()}})  # fmt: skip
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def pass_columns(table: pa.Table) -> list[str]:
    """The ``<oracle>_pass`` columns of a verification table."""
    return [n for n in table.column_names if n.endswith("_pass")]


def verified_ids(root: str | Path) -> set[str]:
    """The samples of ``root`` whose ``verified`` is true. A dataset nobody reviewed is an error
    that says how to review it."""
    table = read_table(root)
    if table is None or VERIFIED not in table.column_names:
        raise DreamshiftError(
            f"{root} has no verified column in {VERIFICATION}: review it (`dreamshift review "
            f"{root}`, then `dreamshift review export {root} --rule d3s`) or drop --verified-only"
        )
    flags = table.column(VERIFIED).to_pylist()
    ids = table.column("sample_id").to_pylist()
    return {s for s, v in zip(ids, flags, strict=True) if v}


def only_verified(root: str | Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``rows`` (manifest rows of ``root``) that passed review."""
    keep = verified_ids(root)
    return [r for r in rows if r["sample_id"] in keep]
