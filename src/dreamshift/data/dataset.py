"""The dataset directory every stage reads and writes (DESIGN.md, "Data contract").

::

    <dataset>/dataset.json        schema version, resolved config, label maps, group counts
    <dataset>/manifest.parquet    one row per sample (written when every shard is done)
    <dataset>/shards/00000/       image files
    <dataset>/shards/00000.parquet  the shard's rows
    <dataset>/shards/00000.done   JSON stats; written last, after images and rows are durable

>>> DatasetLayout("out/paste").shard_done(3).as_posix()
'out/paste/shards/00003.done'
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dreamshift.data.images import write_atomic
from dreamshift.data.schema import (
    DATASET_JSON,
    MANIFEST_SCHEMA,
    SCHEMA_VERSION,
    DatasetMeta,
    SampleRow,
    manifest_table,
)
from dreamshift.errors import DreamshiftError

# the records, used with the layout
__all__ = ["DATASET_JSON", "MANIFEST_SCHEMA", "SCHEMA_VERSION", "DatasetMeta", "SampleRow",
           "manifest_table"]  # fmt: skip
LOCK = ".lock"  # the running writer's lock, kept inside only when the parent is not writable
MANIFEST = "manifest.parquet"
OK, FAILED, FLAGGED = "ok", "failed", "flagged"  # flagged: made, but unusable (black)

# split names, in the order a composed dataset lists them. "anti" holds every class on every
# background but its assigned one; "spurious" holds backgrounds alone (fg_class is None);
# "conflict" holds one class's shape in another class's coat (coat_class names it).
TRAIN, VAL, TEST, ANTI, SPURIOUS, CONFLICT = "train", "val", "test", "anti", "spurious", "conflict"
SPLITS = (TRAIN, VAL, TEST, ANTI, SPURIOUS, CONFLICT)
NO_CLASS = "(none)"  # the class key of split counts for images without an object


class DatasetLayout:
    """Paths inside a dataset directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def json_path(self) -> Path:
        return self.root / DATASET_JSON

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def shard_name(self, shard: int) -> str:
        return f"{shard:05d}"

    def shard_dir(self, shard: int) -> Path:
        return self.root / "shards" / self.shard_name(shard)

    def shard_rows(self, shard: int) -> Path:
        return self.root / "shards" / f"{self.shard_name(shard)}.parquet"

    def shard_done(self, shard: int) -> Path:
        return self.root / "shards" / f"{self.shard_name(shard)}.done"


def write_table_atomic(table: pa.Table, path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_atomic(path, buf.getvalue())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_shard(layout: DatasetLayout, shard: int, rows: Sequence[SampleRow], stats: dict) -> None:
    """Make a finished shard durable: its rows first, then the done marker."""
    write_table_atomic(manifest_table(rows), layout.shard_rows(shard))
    write_json_atomic(layout.shard_done(shard), stats)


def shard_is_done(layout: DatasetLayout, shard: int) -> bool:
    return layout.shard_done(shard).exists() and layout.shard_rows(shard).exists()


def prepare_output(
    root: Path,
    meta: DatasetMeta,
    normalise: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d,
) -> DatasetMeta | None:
    """Check that ``root`` is new or holds an unfinished run of the same config; write
    ``meta`` as its dataset.json unless that run is complete. Returns the existing metadata
    (None for a new dataset). Never touches a folder that is not a dataset of this config.
    Configs are compared after ``normalise`` (e.g. filling in defaults, so that a dataset
    written before a field existed still matches)."""
    layout = DatasetLayout(root)
    if layout.json_path.exists():
        old = DatasetMeta.read(root)
        if normalise(old.config) != normalise(meta.config):
            new_cfg, old_cfg = normalise(meta.config), normalise(old.config)
            diff = sorted(
                k for k in new_cfg.keys() | old_cfg.keys() if new_cfg.get(k) != old_cfg.get(k)
            )
            raise DreamshiftError(
                f"{root} holds a dataset made with a different config (differs in {diff}): "
                "choose another --out or delete that folder"
            )
        if old.complete:
            return old
    elif root.exists() and (
        not root.is_dir() or {p.name for p in root.iterdir()} - {DATASET_JSON + ".tmp", LOCK}
    ):  # a run killed while writing its first dataset.json leaves only that .tmp file
        raise DreamshiftError(
            f"{root} exists and is not a dreamshift dataset: choose another --out"
        )
    else:
        old = None
    root.mkdir(parents=True, exist_ok=True)
    write_meta(layout, meta)
    return old


def write_meta(layout: DatasetLayout, meta: DatasetMeta) -> None:
    write_json_atomic(layout.json_path, meta.to_dict())


def read_manifest(root: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All rows of a dataset: ``manifest.parquet``, or the done shards of an unfinished run;
    ``columns``: only those (a training run reads 7 of the ~40, not the prompts and JSON)."""
    layout = DatasetLayout(root)
    meta = DatasetMeta.read(root)
    names = list(columns) if columns is not None else None
    if layout.manifest_path.exists():
        return pq.read_table(layout.manifest_path, schema=MANIFEST_SCHEMA, columns=names)
    parts = [
        pq.read_table(layout.shard_rows(k), schema=MANIFEST_SCHEMA, columns=names)
        for k in range(meta.num_shards or 0)
        if shard_is_done(layout, k)
    ]
    empty = MANIFEST_SCHEMA.empty_table()
    return pa.concat_tables(parts) if parts else empty.select(names) if names else empty


def read_rows(root: str | Path) -> list[SampleRow]:
    """All rows of a dataset as :class:`SampleRow` records (see :func:`read_manifest`)."""
    return SampleRow.of_table(read_manifest(root))


def consolidate_manifest(layout: DatasetLayout, num_shards: int) -> pa.Table:
    """Concatenate every shard's rows, in shard order, into ``manifest.parquet``."""
    parts = [pq.read_table(layout.shard_rows(k), schema=MANIFEST_SCHEMA) for k in range(num_shards)]
    table = pa.concat_tables(parts) if parts else MANIFEST_SCHEMA.empty_table()
    write_table_atomic(table, layout.manifest_path)
    return table
