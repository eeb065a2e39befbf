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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dreamshift.data.images import IMAGE_SUFFIXES, write_atomic
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
# "conflict" holds one class's shape in another class's coat (coat_class names it); "size" and
# "position" hold every test sample again, at fixed scales at the centre and at the centre of
# each cell of a grid (ForAug's size and center bias, Nauen et al. 2025).
TRAIN, VAL, TEST, ANTI, SPURIOUS, CONFLICT = "train", "val", "test", "anti", "spurious", "conflict"
SIZE, POSITION = "size", "position"
SPLITS = (TRAIN, VAL, TEST, ANTI, SPURIOUS, CONFLICT, SIZE, POSITION)
# probes: no sample of their labels' distribution, so never part of "every split" (training, the
# audit's default rows); each is read only by its own metric
PROBES = (SPURIOUS, CONFLICT, SIZE, POSITION)
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
        if old.stage != meta.stage:
            raise DreamshiftError(
                f"{root} holds a dataset made by `dreamshift {old.stage}`, not by "
                f"`dreamshift {meta.stage}`: choose another --out"
            )
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
    ``columns``: only those (a training run reads 7 of the ~40, not the prompts and JSON).
    A damaged file, or a row whose ``path`` could reach outside the dataset's images (see
    :func:`check_paths`), is refused naming it."""
    layout = DatasetLayout(root)
    meta = DatasetMeta.read(root)
    names = list(columns) if columns is not None else None
    if layout.manifest_path.exists():
        table = _read_rows_file(layout.manifest_path, names)
    else:
        parts = [
            _read_rows_file(layout.shard_rows(k), names)
            for k in range(meta.num_shards or 0)
            if shard_is_done(layout, k)
        ]
        empty = MANIFEST_SCHEMA.empty_table()
        table = pa.concat_tables(parts) if parts else empty.select(names) if names else empty
    check_paths(table, layout.manifest_path)
    return table


def _read_rows_file(path: Path, names: list[str] | None) -> pa.Table:
    try:
        table = pq.read_table(path, schema=MANIFEST_SCHEMA, columns=names)
        table.validate(full=True)  # e.g. text that is no UTF-8
        return table
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException) and exc.errno:
            raise  # a disk error, not a damaged file
        raise DreamshiftError(
            f"{path} is damaged or not a dreamshift manifest ({type(exc).__name__}: {exc}): "
            "restore it, or run the command that made the dataset again"
        ) from exc


# what a manifest row's image path may be: relative, inside the dataset, an image file, in no
# dot-folder (no ".." either) and not in the review app's folder (it holds reviewers' tokens)
_IMAGE_PATH = (
    r"(?i)^([^/.\x00][^/\x00]*/)*[^/.\x00][^/\x00]*\.("
    + "|".join(sorted(s.lstrip(".") for s in IMAGE_SUFFIXES))
    + ")$"
)
REVIEW_FOLDER = "review/"  # written beside the images by `dreamshift review`
PATH_COLUMNS = ("path", "mask_path")  # the manifest's columns that name files


def check_paths(table: pa.Table, where: Path) -> None:
    """Refuse a manifest with a ``path`` or ``mask_path`` that is absolute, climbs out
    (``..``), names a dot-folder or the review folder, or is no image file: one a dataset
    someone else made could use to have dreamshift read, export or serve other files."""
    for column in PATH_COLUMNS:
        if column not in table.column_names:
            continue
        paths = table.column(column)
        ok = pc.and_(
            pc.match_substring_regex(paths, _IMAGE_PATH),
            pc.invert(pc.starts_with(paths, REVIEW_FOLDER)),
        )
        bad = pc.invert(pc.fill_null(ok, True))  # a failed sample has no file: null
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            row = table.slice(i, 1).to_pylist()[0]
            raise DreamshiftError(
                f"{where}: row {row.get('sample_id', i)!r} has {column} {row[column]!r}, which "
                "is not an image file inside the dataset (an absolute path, '..', a dot-folder "
                "or review/): the dataset is damaged or was made to read other files; do not "
                "use it"
            )


def sample_file(root: Path, relative: str) -> Path | None:
    """``root / relative`` when ``relative`` is a manifest image path (see :func:`check_paths`)
    and the file it names, links resolved, is a file inside ``root``; else None."""
    table = pa.table({"path": pa.array([relative], pa.string())})
    try:
        check_paths(table, root)
    except DreamshiftError:
        return None
    root = root.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def read_rows(root: str | Path) -> list[SampleRow]:
    """All rows of a dataset as :class:`SampleRow` records (see :func:`read_manifest`)."""
    return SampleRow.of_table(read_manifest(root))


def consolidate_manifest(layout: DatasetLayout, num_shards: int) -> pa.Table:
    """Concatenate every shard's rows, in shard order, into ``manifest.parquet``."""
    parts = [pq.read_table(layout.shard_rows(k), schema=MANIFEST_SCHEMA) for k in range(num_shards)]
    table = pa.concat_tables(parts) if parts else MANIFEST_SCHEMA.empty_table()
    write_table_atomic(table, layout.manifest_path)
    return table
